// ArtStore upload page: resumable uploads by a small tus 1.0.0 client, through the UI's
// proxy at /upload/tus (the session's token stays on the server). Without this script the
// form posts multipart to /upload instead.
//
// A started upload's address is kept in localStorage under a fingerprint of the file (name,
// size, lastModified) and the form's fields; picking the same file again, even after a
// reload, asks the server how much it has (HEAD) and goes on from there. A dropped
// connection is retried with growing pauses.
(function () {
  "use strict";

  var TUS = "1.0.0";
  var PREFIX = "artstore.tus:";
  var FIELDS = ["retention_policy", "tags", "description", "metadata", "document_id"];
  var RETRIES = 8;
  var KEEP_MS = 24 * 3600 * 1000; // the ingester forgets an idle upload after 24 h

  // Base64 of the UTF-8 bytes of a string.
  function b64(text) {
    var bytes = new TextEncoder().encode(String(text));
    var bin = "";
    for (var i = 0; i < bytes.length; i++) { bin += String.fromCharCode(bytes[i]); }
    return btoa(bin);
  }

  // Upload-Metadata from [key, value] pairs: "key base64,key base64"; blank values left out.
  // (ui/src/pages/upload.rs encodes the same way, and tests it.)
  function encodeMetadata(pairs) {
    return pairs
      .filter(function (p) { return p[1] !== undefined && p[1] !== null && String(p[1]) !== ""; })
      .map(function (p) { return p[0] + " " + b64(p[1]); })
      .join(",");
  }

  function fingerprint(file, fields) {
    return PREFIX + JSON.stringify([file.name, file.size, file.lastModified, fields]);
  }

  if (typeof document === "undefined") {
    // Loaded by node for a check of the pure parts.
    if (typeof module !== "undefined") { module.exports = { b64: b64, encodeMetadata: encodeMetadata, fingerprint: fingerprint }; }
    return;
  }

  var form = document.getElementById("upload");
  if (!form || !window.XMLHttpRequest || !window.fetch || !window.TextEncoder || !Blob.prototype.slice) { return; }
  var input = document.getElementById("files");
  var zone = document.getElementById("dropzone");
  var list = document.getElementById("uploads");
  var startButton = document.getElementById("start");
  var message = document.getElementById("upload-message");
  var chosen = document.getElementById("chosen");
  var dropped = [];

  function csrf() { return document.body.getAttribute("data-csrf") || ""; }
  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }
  function pct(n, total) { return total > 0 ? Math.floor((n * 100) / total) : 100; }

  var store = {
    get: function (key) {
      try {
        var v = JSON.parse(window.localStorage.getItem(key) || "null");
        return v && v.url && Date.now() - v.at < KEEP_MS ? v.url : null;
      } catch (e) { return null; }
    },
    set: function (key, url) {
      try { window.localStorage.setItem(key, JSON.stringify({ url: url, at: Date.now() })); } catch (e) { /* private mode: no resume */ }
    },
    remove: function (key) {
      try { window.localStorage.removeItem(key); } catch (e) { /* nothing kept */ }
    },
    // Names of the unfinished uploads this browser remembers; stale entries are dropped.
    pending: function () {
      var names = [];
      try {
        for (var i = window.localStorage.length - 1; i >= 0; i--) {
          var key = window.localStorage.key(i);
          if (!key || key.indexOf(PREFIX) !== 0) { continue; }
          if (!store.get(key)) { window.localStorage.removeItem(key); continue; }
          names.push(JSON.parse(key.slice(PREFIX.length))[0]);
        }
      } catch (e) { /* unreadable storage: nothing to offer */ }
      return names;
    }
  };

  function say(text, isError) {
    message.textContent = text;
    message.className = "full" + (text ? (isError ? " msg err" : " msg ok") : "");
    if (isError && text) { message.setAttribute("role", "alert"); } else { message.removeAttribute("role"); }
  }

  function chunkSize() {
    var n = parseInt(form.getAttribute("data-chunk"), 10);
    return n > 0 ? n : 1048576;
  }

  // The form's fields as the upload sends them, or an error sentence.
  function readFields() {
    var out = {};
    FIELDS.forEach(function (name) {
      var el = form.elements[name];
      out[name] = el ? String(el.value).trim() : "";
    });
    if (out.metadata) {
      var parsed;
      try { parsed = JSON.parse(out.metadata); } catch (e) {
        return { error: "Metadata is not valid JSON: " + e.message + ". Example: {\"customer\": \"ACME\"}" };
      }
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
        return { error: "Metadata must be a JSON object, like {\"customer\": \"ACME\"}." };
      }
    }
    if (out.document_id && !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(out.document_id)) {
      return { error: "The document id " + out.document_id + " is not a UUID." };
    }
    return { fields: out };
  }

  // A refusal's sentence, from the problem+json body if there is one.
  function problem(status, text) {
    try {
      var p = JSON.parse(text);
      var t = p.detail || p.title;
      if (t) { return { text: t, type: String(p.type || "") }; }
    } catch (e) { /* not JSON */ }
    return { text: "The server answered " + status + (text && text.length < 200 ? ": " + text : "."), type: "" };
  }

  function Failure(text, keep) {
    this.message = text;
    this.keep = !!keep; // the upload can still be resumed later
  }

  // ---- one list item per file

  function Item(file) {
    this.li = document.createElement("li");
    this.li.setAttribute("data-state", "uploading");
    var name = document.createElement("strong");
    name.textContent = file.name;
    this.bar = document.createElement("progress");
    this.bar.max = Math.max(file.size, 1);
    this.bar.value = 0;
    this.bar.setAttribute("aria-label", "Progress of " + file.name);
    this.status = document.createElement("span");
    this.status.className = "status";
    this.status.textContent = "Waiting";
    this.percent = document.createElement("span");
    this.percent.className = "muted pct";
    this.note = document.createElement("small");
    this.note.className = "muted note";
    this.li.appendChild(name);
    this.li.appendChild(document.createTextNode(" "));
    this.li.appendChild(this.status);
    this.li.appendChild(document.createTextNode(" "));
    this.li.appendChild(this.percent);
    this.li.appendChild(this.bar);
    this.li.appendChild(this.note);
    this.size = file.size;
    this.name = file.name;
    list.appendChild(this.li);
  }
  Item.prototype.setStatus = function (text) { this.status.textContent = text; };
  Item.prototype.progress = function (n) {
    this.bar.value = Math.min(n, this.size);
    this.percent.textContent = pct(n, this.size) + "%";
  };
  Item.prototype.resumed = function (offset) {
    var text = "Resuming at " + pct(offset, this.size) + "%";
    this.setStatus(text);
    this.note.textContent = " " + text.replace("Resuming", "Resumed") + ".";
    this.progress(offset);
  };
  Item.prototype.done = function (fileId) {
    this.li.setAttribute("data-state", "done");
    this.progress(this.size);
    this.bar.value = this.bar.max;
    this.setStatus("Done");
    var a = document.createElement("a");
    a.className = "doc-link";
    a.href = "/documents/" + encodeURIComponent(fileId);
    a.textContent = "Open " + this.name;
    this.li.appendChild(document.createTextNode(" "));
    this.li.appendChild(a);
  };
  Item.prototype.fail = function (text) {
    this.li.setAttribute("data-state", "error");
    this.status.textContent = "Failed: " + text;
    this.status.setAttribute("role", "alert");
  };

  // ---- the tus requests, all same-origin through the UI's proxy

  function head(url) {
    return fetch(url, { method: "HEAD", headers: { "Tus-Resumable": TUS }, credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        var offset = parseInt(r.headers.get("Upload-Offset"), 10);
        var length = parseInt(r.headers.get("Upload-Length"), 10);
        return { status: r.status, ok: r.status === 200 && !isNaN(offset), offset: offset, length: length };
      });
  }

  function create(file, fields) {
    var meta = [["filename", file.name], ["content_type", file.type]];
    FIELDS.forEach(function (k) { meta.push([k, fields[k]]); });
    return fetch("/upload/tus", {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Tus-Resumable": TUS,
        "Upload-Length": String(file.size),
        "Upload-Metadata": encodeMetadata(meta),
        "X-CSRF-Token": csrf()
      }
    }).then(function (r) {
      var loc = r.headers.get("Location");
      if (r.status === 201 && loc) { return loc; }
      return r.text().then(function (t) {
        if (r.redirected || (r.headers.get("Content-Type") || "").indexOf("text/html") === 0) {
          throw new Failure("Your session has ended. Reload the page and sign in again.");
        }
        throw new Failure(problem(r.status, t).text);
      });
    }, function () {
      throw new Failure("The server cannot be reached. Check the connection and start again.");
    });
  }

  function patch(url, blob, offset, onProgress) {
    return new Promise(function (resolve) {
      var x = new XMLHttpRequest();
      x.open("PATCH", url);
      x.setRequestHeader("Tus-Resumable", TUS);
      x.setRequestHeader("Upload-Offset", String(offset));
      x.setRequestHeader("Content-Type", "application/offset+octet-stream");
      x.setRequestHeader("X-CSRF-Token", csrf());
      x.upload.onprogress = function (e) { if (e.lengthComputable) { onProgress(e.loaded); } };
      x.onload = function () { resolve(x); };
      x.onerror = x.ontimeout = x.onabort = function () { resolve(null); };
      x.send(blob);
    });
  }

  // The stored document of a finished upload (its last answer was lost, or it was resumed
  // when all bytes were in).
  function fileIdOf(url) {
    var tries = 0;
    function ask() {
      return fetch(url, { credentials: "same-origin", cache: "no-store", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.text().then(function (t) { return { status: r.status, text: t }; }); })
        .then(function (a) {
          var s = null;
          try { s = JSON.parse(a.text); } catch (e) { /* not JSON */ }
          if (a.status === 200 && s && s.file_id) { return s.file_id; }
          if (a.status === 200 && s && s.state === "failed") { throw new Failure(s.error || "The archive refused the document."); }
          if (a.status === 200 && s && (s.state === "storing" || s.state === "receiving") && tries++ < 60) {
            return sleep(1000).then(ask);
          }
          throw new Failure(problem(a.status, a.text).text, a.status >= 500);
        });
    }
    return ask();
  }

  // Sends the bytes from `offset` on; answers the stored file's id, or null when the last
  // answer did not carry it.
  async function send(file, url, offset, item) {
    var failures = 0;
    for (;;) {
      if (offset >= file.size && file.size > 0) { return null; }
      var end = Math.min(offset + chunkSize(), file.size);
      var from = offset;
      var x = await patch(url, file.slice(from, end), from, function (loaded) { item.progress(from + loaded); });
      if (x && x.status === 204) {
        var next = parseInt(x.getResponseHeader("Upload-Offset"), 10);
        if (isNaN(next)) { throw new Failure("The server did not say how much it has received.", true); }
        offset = next;
        failures = 0;
        item.progress(offset);
        var id = x.getResponseHeader("ArtStore-File-Id");
        if (id) { return id; }
        if (file.size === 0) { return null; }
        continue;
      }
      var p = x ? problem(x.status, x.responseText) : { text: "", type: "" };
      if (x && x.status === 409 && /upload-complete$/.test(p.type)) { return null; }
      if (x && x.status === 409 && /upload-failed$/.test(p.type)) { throw new Failure(p.text); }
      if (x && x.responseURL && x.responseURL.indexOf("/login") >= 0) {
        throw new Failure("Your session has ended. Sign in again, then pick the same file to resume.", true);
      }
      var retry = !x || x.status === 0 || x.status >= 500 || x.status === 409 || x.status === 423 || x.status === 429;
      if (!retry) { throw new Failure(p.text, x.status === 403); }
      failures += 1;
      if (failures > RETRIES) {
        throw new Failure("The connection keeps failing" + (p.text ? " (" + p.text + ")" : "") + ". Pick the same file again later to resume.", true);
      }
      var wait = Math.min(30, Math.pow(2, failures - 1));
      item.setStatus((x && x.status ? "The server is busy" : "Connection lost") + ", retrying in " + wait + " s…");
      await sleep(wait * 1000);
      var h = null;
      try { h = await head(url); } catch (e) { h = null; }
      if (h && h.ok) {
        offset = h.offset;
        item.resumed(offset);
      } else if (h && (h.status === 404 || h.status === 410)) {
        throw new Failure("The upload expired on the server; start it again.");
      }
    }
  }

  async function upload(file, fields, item) {
    var key = fingerprint(file, fields);
    var url = store.get(key);
    var offset = 0;
    if (url) {
      var h = null;
      try { h = await head(url); } catch (e) { h = null; }
      if (h && h.ok && h.length === file.size) {
        offset = h.offset;
        item.resumed(offset);
      } else if (h && h.status >= 500) {
        throw new Failure("The server cannot tell how far the earlier upload got; try again later.", true);
      } else {
        store.remove(key);
        url = null;
      }
    }
    if (!url) {
      item.setStatus("Starting");
      url = await create(file, fields);
      store.set(key, url);
      item.setStatus("Uploading");
    }
    var id = await send(file, url, offset, item);
    if (!id) { id = await fileIdOf(url); }
    store.remove(key);
    return id;
  }

  async function uploadAll(files, fields) {
    startButton.disabled = true;
    var items = files.map(function (f) { return new Item(f); });
    var ok = 0;
    for (var i = 0; i < files.length; i++) {
      var key = fingerprint(files[i], fields);
      try {
        var id = await upload(files[i], fields, items[i]);
        items[i].done(id);
        ok += 1;
      } catch (e) {
        var f = e instanceof Failure ? e : new Failure(String(e && e.message ? e.message : e), true);
        if (!f.keep) { store.remove(key); }
        items[i].fail(f.message);
      }
    }
    startButton.disabled = false;
    if (ok === files.length) {
      say(ok === 1 ? "The file is stored." : "All " + ok + " files are stored.", false);
    } else {
      say((files.length - ok) + " of " + files.length + " files were not stored; see the list below.", true);
    }
    dropped = [];
    showPending();
  }

  function currentFiles() {
    if (dropped.length) { return dropped.slice(); }
    return Array.prototype.slice.call(input.files || []);
  }

  function showChosen() {
    var files = currentFiles();
    chosen.textContent = files.length ? files.length + (files.length === 1 ? " file: " : " files: ") +
      files.map(function (f) { return f.name; }).join(", ") : "";
  }

  function showPending() {
    var hint = document.getElementById("resume-hint");
    if (!hint) { return; }
    var names = store.pending();
    hint.hidden = names.length === 0;
    hint.textContent = names.length ? "Unfinished uploads can be resumed: pick the same file again with the same fields (" +
      names.join(", ") + ")." : "";
  }

  // ---- the page

  input.addEventListener("change", function () { dropped = []; showChosen(); });
  ["dragenter", "dragover"].forEach(function (ev) {
    zone.addEventListener(ev, function (e) { e.preventDefault(); zone.classList.add("over"); });
  });
  ["dragleave", "dragend"].forEach(function (ev) {
    zone.addEventListener(ev, function () { zone.classList.remove("over"); });
  });
  zone.addEventListener("drop", function (e) {
    e.preventDefault();
    zone.classList.remove("over");
    var files = e.dataTransfer && e.dataTransfer.files;
    if (!files || !files.length) { return; }
    dropped = [];
    try { input.files = files; } catch (err) { dropped = Array.prototype.slice.call(files); }
    showChosen();
  });

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var files = currentFiles();
    if (!files.length) { say("Choose or drop at least one file.", true); return; }
    var r = readFields();
    if (r.error) { say(r.error, true); return; }
    say("", false);
    uploadAll(files, r.fields);
  });

  // The file input is required only for the form without this script (drops count too).
  input.required = false;
  showPending();
})();
