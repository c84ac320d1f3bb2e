// Asks the npm memcached package where each key goes: usage
// `node node_memcached_oracle.js KEYS_FILE SPEC_JSON`, SPEC_JSON = {"servers": [...] or
// {"host:port": weight, ...}, "options": {...}} as the app passes them to new Memcached().
// Each key (one a line) goes through client.get(); the client's connect() is replaced to
// record the server the command chose and stop there (no network). Prints per key the
// index of that server in the app's list, or -1 when the client refused the key.
// With `--set` first (live_check.py), the client really stores each key instead and prints
// 1 per stored key, -1 per refused one.
// With PLACEMENT_TIMING=1 it prints only keys_per_s=N: the rate of the client's own
// HashRing.get over the keys, repeated for at least a second (bench/placement.py).
'use strict';
const fs = require('fs');
const Memcached = require('memcached');

if (process.argv[2] === '--set') {
  process.argv.splice(2, 1);
  const spec = JSON.parse(process.argv[3]);
  const client = new Memcached(spec.servers, spec.options || {});
  const keys = fs.readFileSync(process.argv[2], 'utf8').split('\n').slice(0, -1);
  (async () => {
    const out = [];
    for (const key of keys) {
      const err = await new Promise((resolve) => client.set(key, '1', 0, resolve));
      out.push(err ? -1 : 1);
    }
    client.end();
    process.stdout.write(out.join('\n') + '\n');
  })();
  return;
}
const spec = JSON.parse(process.argv[3]);
const client = new Memcached(spec.servers, spec.options || {});
const names = Array.isArray(spec.servers) ? spec.servers : Object.keys(spec.servers);
let chosen = null;
client.connect = function record(server) {
  chosen = server;
};
const keys = fs.readFileSync(process.argv[2], 'utf8').split('\n').slice(0, -1);
if (process.env.PLACEMENT_TIMING === '1') {
  const start = process.hrtime.bigint();
  const elapsed = () => Number(process.hrtime.bigint() - start) / 1e9;
  let placed = 0;
  while (elapsed() < 1) {
    for (const key of keys) client.HashRing.get(key);
    placed += keys.length;
  }
  process.stdout.write(`keys_per_s=${placed / elapsed()}\n`);
  return;
}
const out = [];
for (const key of keys) {
  chosen = null;
  client.get(key, () => {});
  out.push(chosen === null ? -1 : names.indexOf(chosen));
}
process.stdout.write(out.join('\n') + '\n');
