// The status page's script: statuspage.py inlines it, its SHA-256 in the Content-Security-Policy.
// It draws nothing itself. Every few seconds it fetches status/rows, the same template's rendering of
// the page's live parts (each an element with an id: the figures above the table, the table), and
// makes the page's elements look like them: changed text and attributes only, so the scroll position
// stays and nothing flickers. The server escaped the markup; the script copies nodes, never markup.
(function () {
  "use strict";
  var body = document.body;
  var period = Math.min(10, Math.max(1, Number(body.getAttribute("data-refresh")) || 2)) * 1000;
  var failingSince = null;

  // Make TO (in the page) equal FROM (in the fetched document): same nodes kept, changes written.
  function morph(to, from) {
    if (to.isEqualNode(from)) return;  // most rows, most cells: nothing changed
    if (to.nodeType !== from.nodeType || to.nodeName !== from.nodeName) {
      to.parentNode.replaceChild(document.importNode(from, true), to);
      return;
    }
    if (to.nodeType !== 1) {
      if (to.nodeValue !== from.nodeValue) to.nodeValue = from.nodeValue;
      return;
    }
    var i, name;
    for (i = to.attributes.length - 1; i >= 0; i--) {
      name = to.attributes[i].name;
      if (!from.hasAttribute(name)) to.removeAttribute(name);
    }
    for (i = 0; i < from.attributes.length; i++) {
      name = from.attributes[i].name;
      if (to.getAttribute(name) !== from.attributes[i].value) to.setAttribute(name, from.attributes[i].value);
    }
    var mine = to.firstChild, theirs = from.firstChild, next;
    while (theirs) {
      if (mine) {
        next = mine.nextSibling;
        morph(mine, theirs);
        mine = next;
      } else {
        to.appendChild(document.importNode(theirs, true));
      }
      theirs = theirs.nextSibling;
    }
    while (mine) {
      next = mine.nextSibling;
      to.removeChild(mine);
      mine = next;
    }
  }

  function show(doc) {
    Array.prototype.forEach.call(doc.body.children, function (from) {
      var to = from.id && document.getElementById(from.id);
      if (to) morph(to, from);
    });
    if (doc.title) document.title = doc.title;
  }

  function tick() {
    var started = performance.now();
    fetch("status/rows", {cache: "no-store", credentials: "same-origin"}).then(function (response) {
      if (!response.ok) throw new Error("status/rows: HTTP " + response.status);
      return response.text();
    }).then(function (text) {
      show(new DOMParser().parseFromString(text, "text/html"));
      failingSince = null;
      body.setAttribute("data-refresh-ms", (performance.now() - started).toFixed(1));
      body.setAttribute("data-updates", String(Number(body.getAttribute("data-updates") || 0) + 1));
    }).catch(function (error) {
      var updated = document.getElementById("updated");
      if (failingSince === null) failingSince = new Date();
      updated.className = "stale";
      updated.textContent = "The balancer has not answered since " + failingSince.toLocaleTimeString() +
        " (" + error.message + "): the figures below are older.";
    }).then(function () { setTimeout(tick, period); });
  }

  // The moment the server's table is on screen (benchmarks/status_page.py reads it).
  requestAnimationFrame(function () {
    setTimeout(function () { body.setAttribute("data-drawn-ms", performance.now().toFixed(0)); }, 0);
  });
  setTimeout(tick, period);
})();
