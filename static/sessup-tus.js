/*
 * sessup-tus.js: a small tus 1.0.0 client for pyramid_sessup's /files/ endpoint.
 *
 *   var up = new SessupTus.Upload(file, {
 *     endpoint: '/files/', chunkSize: 5 * 1024 * 1024,
 *     onProgress: function (sent, total) {},     // bytes: the server's offset plus the chunk in flight
 *     onResume: function (offset, total) {},     // continuing an earlier upload at the server's offset
 *     onRetry: function (err, attempt) {},       // a chunk failed; retrying after a HEAD
 *     onSuccess: function (result) {},           // GET /files/{id} JSON (+ resumedAt)
 *     onError: function (err) {}                 // gave up (not called after abort)
 *   });
 *   up.start();                // a Promise of the result
 *   up.abort(true);            // stop the request in flight; true: also DELETE the upload (a Promise)
 *   SessupTus.offsetOf(file)   // a Promise: the server's offset of a remembered upload, or null
 *
 * Create (POST), PATCH in chunks, HEAD to find the server's offset after an
 * error or a reload.  The upload URL is remembered in localStorage under the
 * file's name + size + lastModified, so choosing the same file again after a
 * page reload continues where the server stopped.  No CSRF token is needed:
 * the Tus-Resumable header cannot be sent cross-site without a preflight.
 *
 * SessupTus.attach(form) wires a form like /tus-demo's: an <input type=file>,
 * [data-tus-progress] (a <progress>), [data-tus-status] and [data-tus-result].
 */
(function (global) {
  'use strict';

  var VERSION = '1.0.0';
  var PREFIX = 'sessup-tus:';
  var RETRY_DELAYS = [0, 1000, 3000, 5000, 10000];

  function storageKey(file) {
    return PREFIX + file.name + ':' + file.size + ':' + file.lastModified;
  }

  function remember(file, url) {
    try { global.localStorage.setItem(storageKey(file), url); } catch (e) { /* private mode */ }
  }

  function recall(file) {
    try { return global.localStorage.getItem(storageKey(file)); } catch (e) { return null; }
  }

  function forget(file) {
    try { global.localStorage.removeItem(storageKey(file)); } catch (e) { /* ignore */ }
  }

  function b64(text) {
    var bytes = new TextEncoder().encode(text), bin = '';
    for (var i = 0; i < bytes.length; i++) { bin += String.fromCharCode(bytes[i]); }
    return global.btoa(bin);
  }

  function b64buf(buffer) {
    var bytes = new Uint8Array(buffer), bin = '';
    for (var i = 0; i < bytes.length; i++) { bin += String.fromCharCode(bytes[i]); }
    return global.btoa(bin);
  }

  // One request; resolves with the XHR whatever the status, rejects on a
  // network error or an abort.  holder._xhr is the request in flight.
  function send(method, url, headers, body, onUploadProgress, holder) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.open(method, url, true);
      xhr.setRequestHeader('Tus-Resumable', VERSION);
      Object.keys(headers || {}).forEach(function (k) { xhr.setRequestHeader(k, headers[k]); });
      if (onUploadProgress && xhr.upload) {
        xhr.upload.onprogress = function (e) { onUploadProgress(e.loaded); };
      }
      function settle() { if (holder && holder._xhr === xhr) { holder._xhr = null; } }
      xhr.onload = function () { settle(); resolve(xhr); };
      xhr.onerror = function () { settle(); reject(new Error('network error')); };
      xhr.onabort = function () { settle(); reject(aborted()); };
      if (holder) { holder._xhr = xhr; }
      xhr.send(body === undefined ? null : body);
    });
  }

  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  function aborted() {
    var err = new Error('aborted');
    err.name = 'AbortError';
    return err;
  }

  function failure(xhr, what) {
    var text = (xhr.responseText || '').trim();
    try { text = JSON.parse(text).error || text; } catch (e) { /* plain text */ }
    var err = new Error(what + ' failed: ' + xhr.status + (text ? ' ' + text : ''));
    err.status = xhr.status;
    err.serverMessage = text;
    return err;
  }

  function Upload(file, options) {
    this.file = file;
    this.options = options || {};
    this.endpoint = this.options.endpoint || '/files/';
    this.chunkSize = this.options.chunkSize || 5 * 1024 * 1024;
    this.url = null;
    this.offset = 0;
    this.resumedAt = null;
    this.stopped = false;
    this._xhr = null;
    this._running = null;
    this._wake = null;
  }

  // A pause between retries that abort() cuts short.
  Upload.prototype._sleep = function (ms) {
    var self = this;
    return new Promise(function (resolve) {
      var timer = setTimeout(done, ms);
      function done() { clearTimeout(timer); if (self._wake === done) { self._wake = null; } resolve(); }
      self._wake = done;
    });
  };

  Upload.prototype.start = function () {
    var self = this, opts = this.options;
    this._running = this._run().then(function (result) {
      forget(self.file);
      if (opts.onSuccess) { opts.onSuccess(result); }
      return result;
    }, function (err) {
      if (self.stopped) { throw aborted(); }
      if (opts.onError) { opts.onError(err); }
      throw err;
    });
    return this._running;
  };

  // Stop: abort the request in flight (a PATCH's bytes in transit are lost;
  // the server keeps its committed offset).  abort(true) also terminates the
  // upload (DELETE) once nothing is in flight any more, so nothing is left on
  // the server, and forgets it here.  Resolves when that is done.
  Upload.prototype.abort = function (terminate) {
    var self = this;
    this.stopped = true;
    // A creation (POST) is left to finish: its answer names what to delete.
    if (this._xhr && this._xhr._tusMethod !== 'POST') { this._xhr.abort(); }
    if (this._wake) { this._wake(); }
    var settled = this._running ? this._running.then(function () { return true; }, function () { return false; })
                                : Promise.resolve(false);
    return settled.then(function (finished) {
      if (!terminate || finished) { return; }  // a finished upload stays: its result was delivered
      forget(self.file);
      if (self.url) { return self._terminate(self.url); }
    });
  };

  // DELETE, retried while the server is still busy with a chunk that arrived
  // whole before the abort (409) or the network hiccups; 404/410: already gone.
  Upload.prototype._terminate = async function (url) {
    var last = null;
    for (var i = 0; i < 20; i++) {
      try {
        var res = await send('DELETE', url, {});
        if (res.status === 204 || res.status === 404 || res.status === 410) { return; }
        last = failure(res, 'DELETE');
        if (res.status !== 409 && res.status < 500) { throw last; }
      } catch (e) {
        if (e.status && e.status !== 409 && e.status < 500) { throw e; }
        last = e;
      }
      await sleep(250);
    }
    throw last;
  };

  Upload.prototype._run = async function () {
    var stored = recall(this.file);
    if (stored) {
      var head = await this._head(stored);
      if (head !== null) {
        this.url = stored;
        this.offset = head;
        this.resumedAt = head;
        if (this.options.onResume) { this.options.onResume(head, this.file.size); }
        if (this.options.onProgress) { this.options.onProgress(head, this.file.size); }
      } else {
        forget(this.file);
      }
    }
    if (this.stopped) { throw aborted(); }
    if (!this.url) { await this._create(); }
    var failures = 0;
    while (this.offset < this.file.size) {  // an empty file is complete once created
      if (this.stopped) { throw aborted(); }
      try {
        await this._patch();
        failures = 0;
      } catch (err) {
        if (this.stopped) { throw aborted(); }
        if (err.status && err.status !== 409 && err.status !== 460 && err.status < 500) { throw err; }
        if (failures >= RETRY_DELAYS.length) { throw err; }
        if (this.options.onRetry) { this.options.onRetry(err, failures + 1); }
        await this._sleep(RETRY_DELAYS[failures++]);
        if (this.stopped) { throw aborted(); }
        var offset = await this._head(this.url);  // where the server really is
        if (offset === null) { throw err; }
        this.offset = offset;
      }
    }
    var res = await send('GET', this.url, {Accept: 'application/json'}, undefined, null, this);
    if (res.status !== 200) { throw failure(res, 'result'); }
    var result = JSON.parse(res.responseText);
    result.resumedAt = this.resumedAt;
    return result;
  };

  // The server's offset for url, or null if the upload is gone (404/410).
  Upload.prototype._head = async function (url) {
    for (var i = 0; i < RETRY_DELAYS.length; i++) {
      if (this.stopped) { throw aborted(); }
      try {
        var res = await send('HEAD', url, {}, undefined, null, this);
        if (res.status === 200) { return parseInt(res.getResponseHeader('Upload-Offset'), 10); }
        return null;
      } catch (e) {
        if (this.stopped) { throw aborted(); }
        await this._sleep(RETRY_DELAYS[i]);
      }
    }
    return null;
  };

  Upload.prototype._create = async function () {
    var meta = 'filename ' + b64(this.file.name);
    if (this.file.type) { meta += ',filetype ' + b64(this.file.type); }
    var request = send('POST', this.endpoint, {'Upload-Length': String(this.file.size), 'Upload-Metadata': meta},
                       undefined, null, this);
    if (this._xhr) { this._xhr._tusMethod = 'POST'; }
    var res = await request;
    if (res.status !== 201) { throw failure(res, 'create'); }
    this.url = new URL(res.getResponseHeader('Location'), global.location.href).href;
    this.offset = 0;
    remember(this.file, this.url);
  };

  Upload.prototype._patch = async function () {
    var self = this, start = this.offset, end = Math.min(start + this.chunkSize, this.file.size);
    var chunk = this.file.slice(start, end);
    var headers = {'Upload-Offset': String(start), 'Content-Type': 'application/offset+octet-stream'};
    if (this.options.checksum && global.crypto && global.crypto.subtle) {
      var digest = await global.crypto.subtle.digest('SHA-256', await chunk.arrayBuffer());
      headers['Upload-Checksum'] = 'sha256 ' + b64buf(digest);
    }
    if (this.stopped) { throw aborted(); }
    var res = await send('PATCH', this.url, headers, chunk, function (loaded) {
      if (self.options.onProgress && !self.stopped) { self.options.onProgress(start + loaded, self.file.size); }
    }, this);
    if (res.status !== 204) { throw failure(res, 'PATCH'); }
    this.offset = parseInt(res.getResponseHeader('Upload-Offset'), 10);
    if (this.options.onProgress) { this.options.onProgress(this.offset, this.file.size); }
    if (this.options.onChunk) { this.options.onChunk(this.offset, this.file.size); }
  };

  // The server's offset of an upload remembered for this file (null: none, or gone).
  function offsetOf(file) {
    var url = recall(file);
    if (!url) { return Promise.resolve(null); }
    return send('HEAD', url, {}).then(function (res) {
      return res.status === 200 ? parseInt(res.getResponseHeader('Upload-Offset'), 10) : null;
    }, function () { return null; });
  }

  // Wire a form: choosing a file starts (or resumes) its upload.
  function attach(form, overrides) {
    var input = form.querySelector('input[type=file]');
    var progress = form.querySelector('[data-tus-progress]');
    var status = form.querySelector('[data-tus-status]');
    var link = form.querySelector('[data-tus-result]');
    var chunk = parseInt(form.getAttribute('data-chunk-size') || '', 10) || undefined;
    function show(text) { if (status) { status.textContent = text; } }
    input.addEventListener('change', function () {
      var file = input.files[0];
      if (!file) { return; }
      if (link) { link.hidden = true; }
      var resuming = !!recall(file);
      show(resuming ? 'Resuming ' + file.name + '…' : 'Uploading ' + file.name + '…');
      var up = new Upload(file, Object.assign({
        endpoint: form.getAttribute('data-endpoint') || '/files/',
        chunkSize: chunk,
        onProgress: function (sent, total) {
          if (progress) { progress.max = total || 1; progress.value = sent; }
          form.setAttribute('data-tus-sent', String(sent));
        },
        onSuccess: function (result) {
          if (progress) { progress.max = result.size || 1; progress.value = result.size; }
          show('Done: ' + result.filename + ' (' + result.size + ' bytes, sha256 ' + result.sha256 + ')' +
               (result.resumedAt !== null ? ', resumed at ' + result.resumedAt : ''));
          form.setAttribute('data-tus-done', JSON.stringify(result));
          if (link) { link.href = result.url; link.textContent = result.filename || result.stored_name; link.hidden = false; }
        },
        onRetry: function (err, attempt) { form.setAttribute('data-tus-retries', String(attempt)); },
        onError: function (err) { show('Failed: ' + err.message); form.setAttribute('data-tus-error', err.message); }
      }, overrides || {}));
      up.start().catch(function () { /* shown by onError */ });
    });
  }

  global.SessupTus = {Upload: Upload, attach: attach, offsetOf: offsetOf, storageKey: storageKey, VERSION: VERSION};

  if (global.document) {
    var init = function () {
      Array.prototype.forEach.call(document.querySelectorAll('form[data-sessup-tus]'), function (f) { attach(f); });
    };
    if (document.readyState === 'loading') { document.addEventListener('DOMContentLoaded', init); } else { init(); }
  }
}(typeof window !== 'undefined' ? window : this));
