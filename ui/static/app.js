// ArtStore UI: progressive enhancement only. Every page works without this script.
(function () {
  "use strict";
  var csrf = function () { return document.body ? document.body.getAttribute("data-csrf") : null; };

  // htmx requests carry the session's CSRF token.
  document.addEventListener("htmx:configRequest", function (e) {
    var t = csrf();
    if (t) { e.detail.headers["X-CSRF-Token"] = t; }
  });

  // Forms and buttons with data-confirm ask before they are sent.
  document.addEventListener("submit", function (e) {
    var f = e.target;
    var text = f.getAttribute("data-confirm");
    if (text && !window.confirm(text)) { e.preventDefault(); }
  }, true);
})();
