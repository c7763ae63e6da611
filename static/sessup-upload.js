/*
 * sessupUpload: upload files with XMLHttpRequest + FormData, in the call shape
 * of jQuery's $.ajaxFileUpload, so existing code ports by renaming one call:
 *
 *   sessupUpload({
 *     url: '/upFile', fileElementId: 'inputFile', dataType: 'json',   // or 'text'
 *     data: {description: 'x'},                                        // extra fields (optional)
 *     success: function (data, status, xhr) {},
 *     error: function (xhr, status, message) {},                       // status: 'error' | 'abort' | 'parsererror'
 *     progress: function (loaded, total, event) {},                    // upload progress (bytes)
 *     complete: function (xhr, status) {}                              // optional
 *   });
 *
 * The CSRF token goes in the X-CSRF-Token header: from options.csrfToken, the
 * page's <meta name="csrf-token">, or GET /csrf (options.csrfUrl).
 * Returns {abort: function} (and .xhr once the request started).
 * No jQuery needed; with jQuery loaded, $.sessupUpload is the same function.
 */
(function (global) {
  'use strict';

  var fetchedToken = null;

  function metaToken() {
    var meta = global.document && global.document.querySelector('meta[name="csrf-token"]');
    return meta && meta.getAttribute('content') ? meta.getAttribute('content') : null;
  }

  function getToken(options, done) {
    var token = options.csrfToken || metaToken() || fetchedToken;
    if (token) { done(token); return; }
    var xhr = new XMLHttpRequest();
    xhr.open('GET', options.csrfUrl || '/csrf');
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.onload = function () {
      try { fetchedToken = JSON.parse(xhr.responseText).csrf_token || null; } catch (e) { fetchedToken = null; }
      done(fetchedToken);
    };
    xhr.onerror = function () { done(null); };
    xhr.send();
  }

  function errorMessage(xhr) {
    var text = xhr.responseText || '';
    try { return JSON.parse(text).error || text; } catch (e) { return text.trim() || ('HTTP ' + xhr.status); }
  }

  function sessupUpload(options) {
    options = options || {};
    var element = options.fileElement || (options.fileElementId && global.document.getElementById(options.fileElementId));
    var files = options.files || (element && element.files) || [];
    var field = options.fieldName || (element && element.name) || 'inputFile';
    var dataType = String(options.dataType || 'text').toLowerCase();
    var handle = {xhr: null, aborted: false};
    var finished = false;

    function finish(status) {
      if (finished) { return; }
      finished = true;
      if (options.complete) { options.complete(handle.xhr, status); }
    }
    function fail(xhr, status, message) {
      if (finished) { return; }
      if (options.error) { options.error(xhr, status, message); }
      finish(status);
    }

    handle.abort = function () {
      handle.aborted = true;
      if (handle.xhr) { handle.xhr.abort(); } else { fail(null, 'abort', 'aborted'); }
    };

    getToken(options, function (token) {
      if (handle.aborted) { return; }
      var form = new FormData();
      var data = options.data || {};
      Object.keys(data).forEach(function (key) { form.append(key, data[key]); });
      for (var i = 0; i < files.length; i++) { form.append(field, files[i], files[i].name); }

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
        if (xhr.status < 200 || xhr.status >= 300) { fail(xhr, 'error', errorMessage(xhr)); return; }
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
    });
    return handle;
  }

  global.sessupUpload = sessupUpload;
  if (global.jQuery) { global.jQuery.sessupUpload = sessupUpload; }
})(window);
