// tus-js-client in Node against a running server.
//   node upload.js <endpoint> <file> <cookie> <chunkSize> <stopAfter|0> [uploadUrl]
// stopAfter > 0: abort once that many bytes are acknowledged and print {"url"}.
// Otherwise upload to the end (resuming uploadUrl if given) and print {"url"}.
'use strict';
const fs = require('fs');
const tus = require('tus-js-client');

const [endpoint, path, cookie, chunkSize, stopAfter, uploadUrl] = process.argv.slice(2);
const data = fs.readFileSync(path);
const limit = Number(stopAfter);

const upload = new tus.Upload(data, {
  endpoint,
  uploadUrl: uploadUrl || null,
  chunkSize: Number(chunkSize),
  headers: {Cookie: cookie},
  metadata: {filename: 'from-tus-js-client.bin', filetype: 'application/octet-stream'},
  retryDelays: [],
  onChunkComplete(chunk, accepted) {
    if (limit > 0 && accepted >= limit) {
      upload.abort().then(() => { console.log(JSON.stringify({url: upload.url, accepted})); process.exit(0); });
    }
  },
  onSuccess() { console.log(JSON.stringify({url: upload.url})); },
  onError(err) { console.error(String(err)); process.exit(1); },
});
upload.start();
