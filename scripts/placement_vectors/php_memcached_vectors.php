<?php
// php-memcached places the corpus: Memcached::getServerByKey for every key, no server
// contacted. Usage: php php_memcached_vectors.php KEYS.json SERVERS.json OPTIONS.json
// OPTIONS.json: an ordered list of [name, value] pairs, `name` as the config's behaviors
// spell it (OPT_ without the prefix, lower case), values as true/false, numbers or the
// constant's suffix in lower case (md5 → Memcached::HASH_MD5, consistent →
// Memcached::DISTRIBUTION_CONSISTENT). Prints {"version": ..., "cases": {name: owners}}.
$keys = json_decode(file_get_contents($argv[1]), true);
$cases = json_decode(file_get_contents($argv[2]), true);
$options = json_decode(file_get_contents($argv[3]), true);

function option_value($name, $value) {
    if ($name === 'hash' || $name === 'libketama_hash') {
        return constant('Memcached::HASH_' . strtoupper($value));
    }
    if ($name === 'distribution') {
        return constant('Memcached::DISTRIBUTION_' . strtoupper($value));
    }
    return $value;
}

$out = [];
foreach ($cases as $case) {
    $m = new Memcached();
    $opts = [];
    foreach ($options as [$name, $value]) {
        $opts[constant('Memcached::OPT_' . strtoupper($name))] = option_value($name, $value);
    }
    if ($opts && !$m->setOptions($opts)) {
        fwrite(STDERR, "setOptions failed: " . $m->getResultMessage() . "\n");
        exit(1);
    }
    $servers = [];
    $index = [];
    foreach ($case['hosts'] as $i => [$host, $port]) {
        $port = $port ?? 11211;
        $weight = $case['weights'] ? $case['weights'][$i] : 0;
        $servers[] = [$host, $port, $weight];
        $index[$host . ':' . $port] = $i;
    }
    if (!$m->addServers($servers)) {
        fwrite(STDERR, "addServers failed: " . $m->getResultMessage() . "\n");
        exit(1);
    }
    $owners = [];
    foreach ($keys as $key) {
        $s = $m->getServerByKey($key);
        $owners[] = $s === false ? -1 : $index[$s['host'] . ':' . $s['port']];
    }
    $out[$case['name']] = $owners;
}
echo json_encode(['version' => phpversion('memcached'), 'php' => PHP_VERSION, 'cases' => $out]);
