// tus-js-client's parallel uploads (concatenation) in Node against a running server.
//   node parallel.js <endpoint> <file> <cookie> <parts> <chunkSize> <urlStorage.json> <stopAfter|0>
// The file is split into <parts> partial uploads sent at the same time, then joined
// by a final upload.  stopAfter > 0: abort once that many bytes are acknowledged (in
// all parts together); the partial uploads' URLs stay in <urlStorage.json>.  Otherwise
// resume a previous upload of the same file found there, if any, and finish.
// Prints {"url", "resumed", "requests": [[method, url, offset, concat], ...]}.
'use strict';
const fs = require('fs');
const tus = require('tus-js-client');

const [endpoint, path, cookie, parts, chunkSize, storagePath, stopAfter] = process.argv.slice(2);
const limit = Number(stopAfter);
const requests = [];
let accepted = 0;
let stopping = false;

const upload = new tus.Upload(fs.createReadStream(path), {
  endpoint,
  parallelUploads: Number(parts),
  chunkSize: Number(chunkSize),
  headers: {Cookie: cookie},
  metadata: {filename: 'parallel.bin', filetype: 'application/octet-stream'},
  urlStorage: new tus.FileUrlStorage(storagePath),
  retryDelays: [],
  onBeforeRequest(req) {
    requests.push([req.getMethod(), req.getURL(), req.getHeader('Upload-Offset') || '',
                   req.getHeader('Upload-Concat') || '']);
  },
  onChunkComplete(chunk) {
    accepted += chunk;
    if (limit > 0 && accepted >= limit && !stopping) {
      stopping = true;
      upload.abort().then(() => { console.log(JSON.stringify({accepted, requests})); process.exit(0); });
    }
  },
  onSuccess() { console.log(JSON.stringify({url: upload.url, resumed, requests})); },
  onError(err) { console.error(String(err)); process.exit(1); },
});

let resumed = false;
upload.findPreviousUploads().then((previous) => {
  if (limit === 0 && previous.length > 0) {
    resumed = true;
    upload.resumeFromPreviousUpload(previous[0]);
  }
  upload.start();
});
