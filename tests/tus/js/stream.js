// tus-js-client with a stream of unknown length (creation-defer-length) in Node.
//   node stream.js <endpoint> <file> <cookie> <chunkSize>
// The file is read through a pipe, in pieces of varying size, so the client
// learns the length only when the stream ends and declares it then.
// Prints {"url", "requests": [[method, url, offset, deferLength, uploadLength], ...]}.
'use strict';
const fs = require('fs');
const {PassThrough} = require('stream');
const tus = require('tus-js-client');

const [endpoint, path, cookie, chunkSize] = process.argv.slice(2);
const requests = [];
const pipe = new PassThrough({highWaterMark: 64 * 1024});
fs.createReadStream(path, {highWaterMark: 37 * 1024}).pipe(pipe);

const upload = new tus.Upload(pipe, {
  endpoint,
  uploadLengthDeferred: true,
  chunkSize: Number(chunkSize),
  headers: {Cookie: cookie},
  metadata: {filename: 'stream.bin'},
  retryDelays: [],
  onBeforeRequest(req) {
    requests.push([req.getMethod(), req.getURL(), req.getHeader('Upload-Offset') || '',
                   req.getHeader('Upload-Defer-Length') || '', req.getHeader('Upload-Length') || '']);
  },
  onSuccess() { console.log(JSON.stringify({url: upload.url, requests})); },
  onError(err) { console.error(String(err)); process.exit(1); },
});
upload.start();
