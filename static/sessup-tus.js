/*
 * sessup-tus.js: a small tus 1.0.0 client for pyramid_sessup's /files/ endpoint.
 *
 *   var up = new SessupTus.Upload(file, {
 *     endpoint: '/files/', chunkSize: 5 * 1024 * 1024,
 *     parallelUploads: 4,                        // parts sent at once (concatenation); default 1
 *     parallelMinSize: 20 * 1024 * 1024,         // smaller files go in one part (default: parts × chunkSize)
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
 * page reload continues where the server stopped.  With parallelUploads > 1,
 * a large file (when the server offers concatenation) is cut into that many
 * partial uploads sent at the same time, then joined by a final upload; the
 * parts' URLs are remembered the same way, so a reload continues each part.  No CSRF token is needed:
 * the Tus-Resumable header cannot be sent cross-site without a preflight.
 *
 * SessupTus.attach(form) wires a form like /tus-demo's: an <input type=file>,
 * [data-tus-progress] (a <progress>), [data-tus-status] and [data-tus-result];
 * the form's data-chunk-size and data-parallel-uploads set those options.
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

  // What is remembered for a file: one upload's URL, or (parallel) the
  // partial uploads {parts: [{url, start, end}]}.
  function recallState(file) {
    var raw = recall(file);
    if (!raw) { return null; }
    if (raw.charAt(0) !== '{') { return {url: raw}; }
    try {
      var state = JSON.parse(raw);
      if (state && Array.isArray(state.parts) && state.parts.length) { return state; }
    } catch (e) { /* damaged: start anew */ }
    return null;
  }

  // The extensions a server offers (OPTIONS), asked once per endpoint.
  var discovered = {};
  function extensions(endpoint) {
    if (!discovered[endpoint]) {
      discovered[endpoint] = send('OPTIONS', endpoint, {}).then(function (res) {
        if (res.status !== 204 && res.status !== 200) { return []; }
        return (res.getResponseHeader('Tus-Extension') || '').split(',').map(function (s) { return s.trim(); });
      }, function () { delete discovered[endpoint]; return []; });
    }
    return discovered[endpoint];
  }

  function Upload(file, options) {
    this.file = file;
    this.options = options || {};
    this.endpoint = this.options.endpoint || '/files/';
    this.chunkSize = this.options.chunkSize || 5 * 1024 * 1024;
    // Parallel parts (concatenation): off unless asked for, and only for files
    // large enough to give every part at least one whole chunk.
    this.parallelUploads = Math.max(1, Math.floor(this.options.parallelUploads || 1));
    this.parallelMinSize = this.options.parallelMinSize || this.parallelUploads * this.chunkSize;
    this.url = null;
    this.offset = 0;
    this.begin = 0;               // this upload's slice of the file (the whole file)
    this.end = file.size;
    this.parts = null;            // parallel: [{url, begin, end, offset}], each an upload of its own
    this.resumedAt = null;
    this.stopped = false;
    this._halted = false;         // a part failed: the others stop after their chunk
    this._xhr = null;
    this._running = null;
    this._wakers = [];
  }

  // Every object that may have a request in flight.
  Upload.prototype._holders = function () { return [this].concat(this.parts || []); };
  Upload.prototype._targets = function () { return this.parts || [this]; };

  // A pause between retries that abort() cuts short.
  Upload.prototype._sleep = function (ms) {
    var self = this;
    return new Promise(function (resolve) {
      var timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        self._wakers = self._wakers.filter(function (w) { return w !== done; });
        resolve();
      }
      self._wakers.push(done);
    });
  };

  Upload.prototype._wakeAll = function () { this._wakers.slice().forEach(function (w) { w(); }); };

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

  // Stop: abort the requests in flight (a PATCH's bytes in transit are lost;
  // the server keeps its committed offset).  abort(true) also terminates the
  // upload (DELETE; every part of a parallel one) once nothing is in flight
  // any more, so nothing is left on the server, and forgets it here.
  // Resolves when that is done.
  Upload.prototype.abort = function (terminate) {
    var self = this;
    this.stopped = true;
    // A creation (POST) is left to finish: its answer names what to delete.
    this._holders().forEach(function (h) {
      if (h._xhr && h._xhr._tusMethod !== 'POST') { h._xhr.abort(); }
    });
    this._wakeAll();
    var settled = this._running ? this._running.then(function () { return true; }, function () { return false; })
                                : Promise.resolve(false);
    return settled.then(function (finished) {
      if (!terminate || finished) { return; }  // a finished upload stays: its result was delivered
      forget(self.file);
      var urls = (self.parts || []).map(function (p) { return p.url; }).filter(Boolean);
      if (self.url) { urls.push(self.url); }
      return Promise.all(urls.map(function (url) { return self._terminate(url); })).then(function () {});
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
    var stored = recallState(this.file);
    if (stored && stored.url) {
      var head = await this._head(stored.url, this);
      if (head !== null) {
        this.url = stored.url;
        this.offset = head;
        this._resumed(head);
      } else {
        forget(this.file);
      }
    } else if (stored && !(await this._resumeParts(stored.parts))) {
      forget(this.file);
    }
    if (this.stopped) { throw aborted(); }
    if (!this.url && !this.parts) {
      if (await this._parallelAllowed()) {
        this._splitParts();
      } else {
        await this._create();
      }
    }
    if (this.parts) {
      await this._runParts();
    } else {
      await this._sendAll(this);  // an empty file is complete once created
    }
    var res = await send('GET', this.url, {Accept: 'application/json'}, undefined, null, this);
    if (res.status !== 200) { throw failure(res, 'result'); }
    var result = JSON.parse(res.responseText);
    result.resumedAt = this.resumedAt;
    return result;
  };

  Upload.prototype._resumed = function (offset) {
    this.resumedAt = offset;
    if (this.options.onResume) { this.options.onResume(offset, this.file.size); }
    this._progress();
  };

  // Parallel parts when asked for, the file is large enough, the browser can
  // slice it and the server offers concatenation.
  Upload.prototype._parallelAllowed = async function () {
    if (this.parallelUploads < 2 || this.file.size < this.parallelMinSize || typeof this.file.slice !== 'function') {
      return false;
    }
    return (await extensions(this.endpoint)).indexOf('concatenation') >= 0;
  };

  Upload.prototype._splitParts = function () {
    var size = this.file.size, count = this.parallelUploads, step = Math.ceil(size / count);
    this.parts = [];
    for (var start = 0; start < size; start += step) {
      this.parts.push({url: null, begin: start, end: Math.min(size, start + step), offset: 0, _xhr: null});
    }
  };

  Upload.prototype._rememberParts = function () {
    remember(this.file, JSON.stringify({parts: this.parts.map(function (p) {
      return {url: p.url, start: p.begin, end: p.end};
    })}));
  };

  // Continue remembered parts: HEAD each; one that is gone is uploaded anew.
  Upload.prototype._resumeParts = async function (stored) {
    var size = this.file.size, at = 0;
    for (var i = 0; i < stored.length; i++) {  // the slices must still tile this file
      var p = stored[i];
      if (!p || p.start !== at || !(p.end > p.start) || p.end > size) { return false; }
      at = p.end;
    }
    if (at !== size) { return false; }
    var self = this;
    this.parts = stored.map(function (p) {
      return {url: typeof p.url === 'string' ? p.url : null, begin: p.start, end: p.end, offset: 0, _xhr: null};
    });
    var offsets = await Promise.all(this.parts.map(function (part) {
      return part.url ? self._head(part.url, part) : Promise.resolve(null);
    }));
    var known = 0, found = false;
    this.parts.forEach(function (part, i) {
      if (offsets[i] === null) { part.url = null; return; }
      part.offset = offsets[i];
      known += offsets[i];
      found = true;
    });
    if (!found) { this.parts = null; return false; }
    this._resumed(known);
    return true;
  };

  // Create the missing parts one after the other (a first request may be
  // what starts the session that owns them all), then send every part at
  // once; the first part that fails for good stops the others after their
  // chunk in flight.  Then the final upload joins them.
  Upload.prototype._runParts = async function () {
    var self = this, errors = [];
    for (var i = 0; i < this.parts.length; i++) {
      if (this.stopped) { throw aborted(); }
      if (!this.parts[i].url) {
        await this._create(this.parts[i]);
        this._rememberParts();
      }
    }
    await Promise.all(this.parts.map(function (part) {
      return self._sendAll(part)
        .catch(function (err) {
          if (!errors.length && !self.stopped) { errors.push(err); self._halted = true; self._wakeAll(); }
        });
    }));
    if (this.stopped) { throw aborted(); }
    if (errors.length) { throw errors[0]; }
    await this._createFinal();
  };

  Upload.prototype._createFinal = async function () {
    var urls = this.parts.map(function (p) { return p.url; }).join(' ');
    for (var attempt = 0; ; attempt++) {
      if (this.stopped) { throw aborted(); }
      var request = send('POST', this.endpoint, {'Upload-Concat': 'final;' + urls, 'Upload-Metadata': this._metadata()},
                         undefined, null, this);
      if (this._xhr) { this._xhr._tusMethod = 'POST'; }
      var res = null;
      try {
        res = await request;
      } catch (e) {
        if (this.stopped || attempt >= RETRY_DELAYS.length - 1) { throw e; }
      }
      if (res && res.status === 201) { break; }
      if (res && res.status !== 409 && res.status < 500) { throw failure(res, 'join'); }
      if (res && attempt >= RETRY_DELAYS.length - 1) { throw failure(res, 'join'); }
      await this._sleep(RETRY_DELAYS[attempt + 1]);
    }
    this.url = new URL(res.getResponseHeader('Location'), global.location.href).href;
    this.offset = this.file.size;
    remember(this.file, this.url);  // the parts are gone now: a reload finds the finished upload
  };

  // sent: the bytes the server has, plus those of the requests in flight.
  Upload.prototype._progress = function () {
    if (!this.options.onProgress || this.stopped) { return; }
    var sent = this._targets().reduce(function (sum, t) { return sum + t.offset + (t._inflight || 0); }, 0);
    this.options.onProgress(Math.min(sent, this.file.size), this.file.size);
  };

  // PATCH target (the whole upload, or one part) to its end, retrying
  // network errors, 409, 460 and 5xx after a HEAD.
  Upload.prototype._sendAll = async function (target) {
    var failures = 0, size = target.end - target.begin;
    while (target.offset < size) {
      if (this.stopped || this._halted) { throw aborted(); }
      try {
        await this._patch(target);
        failures = 0;
      } catch (err) {
        target._inflight = 0;
        if (this.stopped || this._halted) { throw aborted(); }
        if (err.status && err.status !== 409 && err.status !== 460 && err.status < 500) { throw err; }
        if (failures >= RETRY_DELAYS.length) { throw err; }
        if (this.options.onRetry) { this.options.onRetry(err, failures + 1); }
        await this._sleep(RETRY_DELAYS[failures++]);
        if (this.stopped || this._halted) { throw aborted(); }
        var offset = await this._head(target.url, target);  // where the server really is
        if (offset === null) { throw err; }
        target.offset = offset;
      }
    }
  };

  // The server's offset for url, or null if the upload is gone (404/410).
  Upload.prototype._head = async function (url, holder) {
    for (var i = 0; i < RETRY_DELAYS.length; i++) {
      if (this.stopped) { throw aborted(); }
      try {
        var res = await send('HEAD', url, {}, undefined, null, holder);
        if (res.status === 200) { return parseInt(res.getResponseHeader('Upload-Offset'), 10); }
        return null;
      } catch (e) {
        if (this.stopped) { throw aborted(); }
        await this._sleep(RETRY_DELAYS[i]);
      }
    }
    return null;
  };

  Upload.prototype._metadata = function () {
    var meta = 'filename ' + b64(this.file.name);
    if (this.file.type) { meta += ',filetype ' + b64(this.file.type); }
    return meta;
  };

  // Create the upload, or (target: a part) one partial upload.
  Upload.prototype._create = async function (target) {
    var part = !!target;
    target = target || this;
    var headers = {'Upload-Length': String(target.end - target.begin)};
    if (part) { headers['Upload-Concat'] = 'partial'; } else { headers['Upload-Metadata'] = this._metadata(); }
    var request = send('POST', this.endpoint, headers, undefined, null, target);
    if (target._xhr) { target._xhr._tusMethod = 'POST'; }
    var res = await request;
    if (res.status !== 201) { throw failure(res, 'create'); }
    target.url = new URL(res.getResponseHeader('Location'), global.location.href).href;
    target.offset = 0;
    if (!part) { remember(this.file, this.url); }
  };

  Upload.prototype._patch = async function (target) {
    var self = this, start = target.offset, end = Math.min(start + this.chunkSize, target.end - target.begin);
    var chunk = this.file.slice(target.begin + start, target.begin + end);
    var headers = {'Upload-Offset': String(start), 'Content-Type': 'application/offset+octet-stream'};
    if (this.options.checksum && global.crypto && global.crypto.subtle) {
      var digest = await global.crypto.subtle.digest('SHA-256', await chunk.arrayBuffer());
      headers['Upload-Checksum'] = 'sha256 ' + b64buf(digest);
    }
    if (this.stopped || this._halted) { throw aborted(); }
    var res = await send('PATCH', target.url, headers, chunk, function (loaded) {
      target._inflight = loaded;
      self._progress();
    }, target);
    target._inflight = 0;
    if (res.status !== 204) { throw failure(res, 'PATCH'); }
    target.offset = parseInt(res.getResponseHeader('Upload-Offset'), 10);
    this._progress();
    if (this.options.onChunk) {
      var sent = this._targets().reduce(function (sum, t) { return sum + t.offset; }, 0);
      this.options.onChunk(sent, this.file.size);
    }
  };

  // The bytes the server has of a remembered upload of this file (null: none, or gone).
  function offsetOf(file) {
    var state = recallState(file);
    if (!state) { return Promise.resolve(null); }
    var urls = state.url ? [state.url] : state.parts.map(function (p) { return p && p.url; });
    return Promise.all(urls.map(function (url) {
      if (!url) { return null; }
      return send('HEAD', url, {}).then(function (res) {
        return res.status === 200 ? parseInt(res.getResponseHeader('Upload-Offset'), 10) : null;
      }, function () { return null; });
    })).then(function (offsets) {
      var known = offsets.filter(function (o) { return o !== null; });
      return known.length ? known.reduce(function (a, b) { return a + b; }, 0) : null;
    });
  }

  // Wire a form: choosing a file starts (or resumes) its upload.
  function attach(form, overrides) {
    var input = form.querySelector('input[type=file]');
    var progress = form.querySelector('[data-tus-progress]');
    var status = form.querySelector('[data-tus-status]');
    var link = form.querySelector('[data-tus-result]');
    function option(name) { return parseInt(form.getAttribute(name) || '', 10) || undefined; }
    function show(text) { if (status) { status.textContent = text; } }
    input.addEventListener('change', function () {
      var file = input.files[0];
      if (!file) { return; }
      if (link) { link.hidden = true; }
      var resuming = !!recall(file);
      show(resuming ? 'Resuming ' + file.name + '…' : 'Uploading ' + file.name + '…');
      var up = new Upload(file, Object.assign({
        endpoint: form.getAttribute('data-endpoint') || '/files/',
        chunkSize: option('data-chunk-size'),
        parallelUploads: option('data-parallel-uploads'),
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

  global.SessupTus = {Upload: Upload, attach: attach, offsetOf: offsetOf, storageKey: storageKey, VERSION: VERSION};

  if (global.document) {
    var init = function () {
      Array.prototype.forEach.call(document.querySelectorAll('form[data-sessup-tus]'), function (f) { attach(f); });
    };
    if (document.readyState === 'loading') { document.addEventListener('DOMContentLoaded', init); } else { init(); }
  }
}(typeof window !== 'undefined' ? window : this));
