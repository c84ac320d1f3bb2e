// Asks memjs where each key goes: usage `node memjs_oracle.js KEYS_FILE SERVERS`, SERVERS
// as the app passes them to memjs.Client.create ("host:port,host:port"). Prints the
// servers memjs parsed as a JSON line, then per key (one a line) the index of the server
// Client#server(key) picks (the method every operation asks), or -1 for none.
// With `--set` first (live_check.py), the client really stores each key instead and prints
// 1 per stored key, -1 per failed one.
// With PLACEMENT_TIMING=1 it prints only keys_per_s=N: the rate of Client#server over the
// keys, repeated for at least a second (bench/placement.py).
'use strict';
const fs = require('fs');
const memjs = require('memjs');

if (process.argv[2] === '--set') {
  const client = memjs.Client.create(process.argv[4]);
  const keys = fs.readFileSync(process.argv[3], 'utf8').split('\n').slice(0, -1);
  (async () => {
    const out = [];
    for (const key of keys) {
      out.push(await client.set(key, '1', {expires: 0}).then((ok) => (ok ? 1 : -1), () => -1));
    }
    client.close();
    process.stdout.write(out.join('\n') + '\n');
  })();
  return;
}
const client = memjs.Client.create(process.argv[3]);
const parsed = client.servers.map((s) => [s.host, s.port]);
const keys = fs.readFileSync(process.argv[2], 'utf8').split('\n').slice(0, -1);
if (process.env.PLACEMENT_TIMING === '1') {
  const start = process.hrtime.bigint();
  const elapsed = () => Number(process.hrtime.bigint() - start) / 1e9;
  let placed = 0;
  while (elapsed() < 1) {
    for (const key of keys) client.server(key);
    placed += keys.length;
  }
  process.stdout.write(`keys_per_s=${placed / elapsed()}\n`);
  for (const server of client.servers) server.close();
  return;
}
const out = [JSON.stringify(parsed)];
for (const key of keys) {
  out.push(client.servers.indexOf(client.server(key)));
}
process.stdout.write(out.join('\n') + '\n');
for (const server of client.servers) server.close();
