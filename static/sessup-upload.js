/*
 * sessupUpload: upload files with XMLHttpRequest + FormData, in the call shape
 * of jQuery's $.ajaxFileUpload, so existing code ports by renaming one call:
 *
 *   sessupUpload({
 *     url: '/upFile', fileElementId: 'inputFile', dataType: 'json',   // or 'text'
 *     data: {description: 'x'},                                        // extra fields (optional)
 *     success: function (data, status, xhr) {},
 *     error: function (xhr, status, message, info) {},                 // status: 'error' | 'abort' | 'parsererror'
 *     progress: function (loaded, total, event) {},                    // upload progress (bytes)
 *     complete: function (xhr, status) {}                              // optional
 *   });
 *
 * The CSRF token goes in the X-CSRF-Token header: from options.csrfToken, the
 * page's <meta name="csrf-token">, or GET /csrf (options.csrfUrl).  If the
 * server refuses the token (403: the session was regenerated or destroyed, or
 * the CSRF cookie cleared, since the page was loaded), sessupUpload gets a fresh one from GET /csrf once,
 * updates the <meta> tag and sends the same files again; options.retryCsrf =
 * false turns that off.
 *
 * error's `info` is the server's JSON error ({error, code, ...details}) when
 * it sent one, else null; `message` is its text.
 * Returns {abort: function} (and .xhr once the request started).
 * No jQuery needed; with jQuery loaded, $.sessupUpload is the same function.
 */
(function (global) {
  'use strict';

  var fetchedToken = null;
  var TOKEN_CODES = {csrf_token_missing: true, csrf_token_invalid: true};

  function metaTag() {
    return global.document ? global.document.querySelector('meta[name="csrf-token"]') : null;
  }

  function metaToken() {
    var meta = metaTag();
    return meta && meta.getAttribute('content') ? meta.getAttribute('content') : null;
  }

  function fetchToken(options, done) {
    var xhr = new XMLHttpRequest();
    xhr.open('GET', options.csrfUrl || '/csrf');
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.onload = function () {
      var token = null;
      try { token = xhr.status === 200 ? JSON.parse(xhr.responseText).csrf_token || null : null; } catch (e) { token = null; }
      if (token) {
        fetchedToken = token;
        var meta = metaTag();
        if (meta) { meta.setAttribute('content', token); }
      }
      done(token);
    };
    xhr.onerror = function () { done(null); };
    xhr.send();
  }

  function getToken(options, done) {
    var token = options.csrfToken || metaToken() || fetchedToken;
    if (token) { done(token); return; }
    fetchToken(options, done);
  }

  function errorInfo(xhr) {
    try {
      var info = JSON.parse(xhr.responseText || '');
      return info && typeof info === 'object' && !Array.isArray(info) ? info : null;
    } catch (e) { return null; }
  }

  function errorMessage(xhr, info) {
    if (info && info.error) { return info.error; }
    return (xhr.responseText || '').trim() || ('HTTP ' + xhr.status);
  }

  // A refused token (not a refused origin, nor another 403 of the application).
  function tokenRefused(xhr, info) {
    if (xhr.status !== 403) { return false; }
    if (info && info.code) { return !!TOKEN_CODES[info.code]; }
    return /^CSRF token (missing|incorrect)/.test(xhr.responseText || '');
  }

  function sessupUpload(options) {
    options = options || {};
    var element = options.fileElement || (options.fileElementId && global.document.getElementById(options.fileElementId));
    var files = options.files || (element && element.files) || [];
    var field = options.fieldName || (element && element.name) || 'inputFile';
    var dataType = String(options.dataType || 'text').toLowerCase();
    var handle = {xhr: null, aborted: false, attempts: 0};
    var finished = false;

    function finish(status) {
      if (finished) { return; }
      finished = true;
      if (options.complete) { options.complete(handle.xhr, status); }
    }
    function fail(xhr, status, message, info) {
      if (finished) { return; }
      if (options.error) { options.error(xhr, status, message, info || null); }
      finish(status);
    }

    handle.abort = function () {
      handle.aborted = true;
      if (handle.xhr) { handle.xhr.abort(); } else { fail(null, 'abort', 'aborted'); }
    };

    // The files stay in `form` (and in the page) until the request succeeds,
    // so a retry sends exactly the same body.
    var form = new FormData();
    var data = options.data || {};
    Object.keys(data).forEach(function (key) { form.append(key, data[key]); });
    for (var i = 0; i < files.length; i++) { form.append(field, files[i], files[i].name); }

    function send(token) {
      if (handle.aborted) { return; }
      handle.attempts++;
      var xhr = new XMLHttpRequest();
      handle.xhr = xhr;
      xhr.open(options.type || 'POST', options.url || '/upFile');
      if (token) { xhr.setRequestHeader('X-CSRF-Token', token); }
      xhr.setRequestHeader('Accept', dataType === 'json' ? 'application/json' : 'text/plain');
      if (xhr.upload && options.progress) {
        xhr.upload.onprogress = function (event) {
          options.progress(event.loaded, event.lengthComputable ? event.total : 0, event);
        };
      }
      xhr.onload = function () {
        if (xhr.status < 200 || xhr.status >= 300) {
          var info = errorInfo(xhr);
          if (handle.attempts === 1 && options.retryCsrf !== false && tokenRefused(xhr, info)) {
            // The page's token went stale (session renewed or destroyed): one fresh token, one retry.
            fetchToken(options, function (fresh) {
              if (fresh) { send(fresh); } else { fail(xhr, 'error', errorMessage(xhr, info), info); }
            });
            return;
          }
          fail(xhr, 'error', errorMessage(xhr, info), info);
          return;
        }
        var result = xhr.responseText;
        if (dataType === 'json') {
          try { result = JSON.parse(result); } catch (e) { fail(xhr, 'parsererror', String(e)); return; }
        }
        if (options.success) { options.success(result, 'success', xhr); }
        finish('success');
      };
      xhr.onerror = function () { fail(xhr, 'error', 'network error'); };
      xhr.onabort = function () { fail(xhr, 'abort', 'aborted'); };
      xhr.send(form);
    }

    getToken(options, send);
    return handle;
  }

  global.sessupUpload = sessupUpload;
  if (global.jQuery) { global.jQuery.sessupUpload = sessupUpload; }
})(window);
