<?php
// php-memcached places the corpus: Memcached::getServerByKey for every key, no server
// contacted. Usage: php php_memcached_vectors.php KEYS.json SERVERS.json OPTIONS.json
// With --live first, SERVERS.json lists real nodes ([[host, port, weight], ...]): every key
// is set through the configured client and read back from each node alone; prints the
// keys whose node is not the one getServerByKey names (the oracle's own cross-check).
// OPTIONS.json: an ordered list of [name, value] pairs, `name` as the config's behaviors
// spell it (OPT_ without the prefix, lower case), values as true/false, numbers or the
// constant's suffix in lower case (md5 → Memcached::HASH_MD5, consistent →
// Memcached::DISTRIBUTION_CONSISTENT). Prints {"version": ..., "cases": {name: owners}}.
// With PLACEMENT_TIMING=1 it prints per case only keys_per_s=N: the rate of
// getServerByKey over the keys, repeated for at least a second (bench/placement.py).
$live = $argv[1] === '--live';
$args = $live ? array_slice($argv, 2) : array_slice($argv, 1);
$keys = json_decode(file_get_contents($args[0]), true);
$cases = json_decode(file_get_contents($args[1]), true);
$options = json_decode(file_get_contents($args[2]), true);

function option_value($name, $value) {
    if ($name === 'hash' || $name === 'libketama_hash') {
        return constant('Memcached::HASH_' . strtoupper($value));
    }
    if ($name === 'distribution') {
        return constant('Memcached::DISTRIBUTION_' . strtoupper($value));
    }
    return $value;
}

function configured($options) {
    $m = new Memcached();
    $opts = [];
    foreach ($options as [$name, $value]) {
        $opts[constant('Memcached::OPT_' . strtoupper($name))] = option_value($name, $value);
    }
    if ($opts && !$m->setOptions($opts)) {
        fwrite(STDERR, "setOptions failed: " . $m->getResultMessage() . "\n");
        exit(1);
    }
    return $m;
}

if ($live) {
    $m = configured($options);
    $m->addServers($cases);
    $alone = [];
    foreach ($cases as [$host, $port, $weight]) {
        $one = new Memcached();
        $one->addServer($host, $port);
        $alone[$host . ':' . $port] = $one;
    }
    $wrong = [];
    $stored = 0;
    $refused = [];
    foreach ($keys as $key) {
        if (!$m->set($key, 'v')) {
            if ($m->getResultCode() === Memcached::RES_BAD_KEY_PROVIDED) {
                $refused[] = $key;  // php-memcached's own key check: no app can store it
                continue;
            }
            fwrite(STDERR, "set failed: " . $m->getResultMessage() . "\n");
            exit(1);
        }
        $s = $m->getServerByKey($key);
        $named = $s['host'] . ':' . $s['port'];
        $held = [];
        foreach ($alone as $node => $one) {
            if ($one->get($key) !== false) {
                $held[] = $node;
            }
        }
        $stored++;
        if ($held !== [$named]) {
            $wrong[] = [$key, $named, $held];
        }
    }
    echo json_encode(['stored' => $stored, 'refused' => $refused, 'wrong' => $wrong]);
    exit(0);
}

$out = [];
foreach ($cases as $case) {
    $m = configured($options);
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
    if (getenv('PLACEMENT_TIMING') === '1') {
        $start = hrtime(true);
        $placed = 0;
        while (hrtime(true) - $start < 1e9) {
            foreach ($keys as $key) {
                $m->getServerByKey($key);
            }
            $placed += count($keys);
        }
        echo 'keys_per_s=' . ($placed / ((hrtime(true) - $start) / 1e9)) . "\n";
        continue;
    }
    $owners = [];
    foreach ($keys as $key) {
        $s = $m->getServerByKey($key);
        $owners[] = $s === false ? -1 : $index[$s['host'] . ':' . $s['port']];
    }
    $out[$case['name']] = $owners;
}
echo json_encode(['version' => phpversion('memcached'), 'php' => PHP_VERSION, 'cases' => $out]);
