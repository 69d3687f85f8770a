// ci-jobwatch status page: the only script. Filters submit on change, forms that say so ask first, and the
// page's live region is refreshed in place (the URL, and so the filter, stays as it is).
(function () {
  "use strict";
  var KEY = "jobwatch.autorefresh";
  var timer = null;

  document.addEventListener("change", function (ev) {
    var form = ev.target.closest ? ev.target.closest("form[data-autosubmit]") : null;
    if (form) { if (form.requestSubmit) { form.requestSubmit(); } else { form.submit(); } }
  });

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { ev.preventDefault(); return; }
    if (form.hasAttribute("data-autosubmit")) {  // "all" filters stay out of the URL
      Array.prototype.forEach.call(form.elements, function (el) {
        if (el.name && el.value === "") { el.disabled = true; }
      });
    }
  });

  window.addEventListener("pageshow", function () {  // back/forward cache: the form is usable again
    Array.prototype.forEach.call(document.querySelectorAll("form[data-autosubmit] [disabled]"),
      function (el) { el.disabled = false; });
  });

  function box() { return document.getElementById("refresh"); }

  function schedule() {
    clearTimeout(timer);
    var b = box();
    if (!b || !b.checked) { return; }
    var seconds = parseInt(document.body.getAttribute("data-refresh"), 10) || 15;
    timer = setTimeout(refresh, seconds * 1000);
  }

  function refresh() {
    var active = document.activeElement;
    if (active && active.closest && active.closest("#live form")) {  // someone is choosing a filter: not now
      schedule();
      return;
    }
    fetch(window.location.href, {headers: {"X-Jobwatch-Partial": "1"}, credentials: "same-origin", cache: "no-store"})
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        var current = document.getElementById("live");
        if (fresh && current) {
          current.replaceWith(document.adoptNode(fresh));
          document.body.setAttribute("data-refreshed", String(Date.now()));
        }
      })
      .catch(function () { /* offline for a moment: try again next time */ })
      .then(schedule);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var b = box();
    if (!b) { return; }
    b.checked = window.localStorage.getItem(KEY) !== "off";
    b.addEventListener("change", function () {
      window.localStorage.setItem(KEY, b.checked ? "on" : "off");
      schedule();
    });
    schedule();
  });
}());
