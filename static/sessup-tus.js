/*
 * sessup-tus.js: a small tus 1.0.0 client for pyramid_sessup's /files/ endpoint.
 *
 *   var up = new SessupTus.Upload(file, {endpoint: '/files/', chunkSize: 5 * 1024 * 1024,
 *                                        onProgress: function (sent, total) {},
 *                                        onSuccess: function (result) {},   // GET /files/{id} JSON
 *                                        onRetry: function (err, attempt) { form.setAttribute('data-tus-retries', String(attempt)); },
        onError: function (err) {}});
 *   up.start();
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

  // One request; resolves with the XHR whatever the status, rejects on a network error.
  function send(method, url, headers, body, onUploadProgress) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.open(method, url, true);
      xhr.setRequestHeader('Tus-Resumable', VERSION);
      Object.keys(headers || {}).forEach(function (k) { xhr.setRequestHeader(k, headers[k]); });
      if (onUploadProgress && xhr.upload) {
        xhr.upload.onprogress = function (e) { onUploadProgress(e.loaded); };
      }
      xhr.onload = function () { resolve(xhr); };
      xhr.onerror = function () { reject(new Error('network error')); };
      xhr.onabort = function () { reject(new Error('aborted')); };
      xhr.send(body === undefined ? null : body);
    });
  }

  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  function failure(xhr, what) {
    var err = new Error(what + ' failed: ' + xhr.status + ' ' + (xhr.responseText || '').trim());
    err.status = xhr.status;
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
  }

  Upload.prototype.start = function () {
    var self = this, opts = this.options;
    return this._run().then(function (result) {
      forget(self.file);
      if (opts.onSuccess) { opts.onSuccess(result); }
      return result;
    }, function (err) {
      if (opts.onError) { opts.onError(err); }
      throw err;
    });
  };

  Upload.prototype.abort = function () { this.stopped = true; };

  Upload.prototype._run = async function () {
    var stored = recall(this.file);
    if (stored) {
      var head = await this._head(stored);
      if (head) {
        this.url = stored;
        this.offset = head;
        this.resumedAt = this.offset;
      } else {
        forget(this.file);
      }
    }
    if (!this.url) { await this._create(); }
    var failures = 0;
    while (this.offset < this.file.size) {  // an empty file is complete once created
      if (this.stopped) { throw new Error('aborted'); }
      try {
        await this._patch();
        failures = 0;
      } catch (err) {
        if (err.status && err.status !== 409 && err.status !== 460 && err.status < 500) { throw err; }
        if (failures >= RETRY_DELAYS.length) { throw err; }
        if (this.options.onRetry) { this.options.onRetry(err, failures + 1); }
        await sleep(RETRY_DELAYS[failures++]);
        var offset = await this._head(this.url);  // where the server really is
        if (offset === null) { throw err; }
        this.offset = offset;
      }
    }
    var res = await send('GET', this.url, {Accept: 'application/json'});
    if (res.status !== 200) { throw failure(res, 'result'); }
    var result = JSON.parse(res.responseText);
    result.resumedAt = this.resumedAt;
    return result;
  };

  // The server's offset for url, or null if the upload is gone (404/410).
  Upload.prototype._head = async function (url) {
    for (var i = 0; i < RETRY_DELAYS.length; i++) {
      try {
        var res = await send('HEAD', url, {});
        if (res.status === 200) { return parseInt(res.getResponseHeader('Upload-Offset'), 10); }
        return null;
      } catch (e) {
        await sleep(RETRY_DELAYS[i]);
      }
    }
    return null;
  };

  Upload.prototype._create = async function () {
    var meta = 'filename ' + b64(this.file.name);
    if (this.file.type) { meta += ',filetype ' + b64(this.file.type); }
    var res = await send('POST', this.endpoint, {'Upload-Length': String(this.file.size), 'Upload-Metadata': meta});
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
    var res = await send('PATCH', this.url, headers, chunk, function (loaded) {
      if (self.options.onProgress) { self.options.onProgress(start + loaded, self.file.size); }
    });
    if (res.status !== 204) { throw failure(res, 'PATCH'); }
    this.offset = parseInt(res.getResponseHeader('Upload-Offset'), 10);
    if (this.options.onProgress) { this.options.onProgress(this.offset, this.file.size); }
    if (this.options.onChunk) { this.options.onChunk(this.offset, this.file.size); }
  };

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
          if (link) { link.href = result.url; link.textContent = result.filename || result.path; link.hidden = false; }
        },
        onRetry: function (err, attempt) { form.setAttribute('data-tus-retries', String(attempt)); },
        onError: function (err) { show('Failed: ' + err.message); form.setAttribute('data-tus-error', err.message); }
      }, overrides || {}));
      up.start().catch(function () { /* shown by onError */ });
    });
  }

  global.SessupTus = {Upload: Upload, attach: attach, storageKey: storageKey, VERSION: VERSION};

  if (global.document) {
    var init = function () {
      Array.prototype.forEach.call(document.querySelectorAll('form[data-sessup-tus]'), function (f) { attach(f); });
    };
    if (document.readyState === 'loading') { document.addEventListener('DOMContentLoaded', init); } else { init(); }
  }
}(typeof window !== 'undefined' ? window : this));
