// Asks memjs where each key goes: usage `node memjs_oracle.js KEYS_FILE SERVERS`, SERVERS
// as the app passes them to memjs.Client.create ("host:port,host:port"). Prints the
// servers memjs parsed as a JSON line, then per key (one a line) the index of the server
// Client#server(key) picks (the method every operation asks), or -1 for none.
'use strict';
const fs = require('fs');
const memjs = require('memjs');

const client = memjs.Client.create(process.argv[3]);
const parsed = client.servers.map((s) => [s.host, s.port]);
const keys = fs.readFileSync(process.argv[2], 'utf8').split('\n').slice(0, -1);
const out = [JSON.stringify(parsed)];
for (const key of keys) {
  out.push(client.servers.indexOf(client.server(key)));
}
process.stdout.write(out.join('\n') + '\n');
for (const server of client.servers) server.close();
