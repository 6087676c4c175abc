// One handler for every error answer htmx does not swap (4xx/5xx other than 409, 422 and 429, which
// come back as fragments) and for a request that got no answer at all: the message is shown in the
// page's #messages region, so a failed save never just ends with the "Saving…" indicator vanishing.
// An error answer marked "Console-Swap: form" (an expired form shown again with what was typed) is
// swapped like a fragment instead.
(function () {
  "use strict";

  function region() {
    return document.getElementById("messages");
  }

  function show(text) {
    var box = region();
    if (!box) { return; }
    box.textContent = "";
    var p = document.createElement("p");
    p.className = "error";
    p.textContent = text + " ";
    var dismiss = document.createElement("button");
    dismiss.type = "button";
    dismiss.className = "link";
    dismiss.textContent = "Dismiss";
    dismiss.addEventListener("click", function () { box.textContent = ""; });
    p.appendChild(dismiss);
    box.appendChild(p);
  }

  // The message an error answer carries: the [data-error-message] of an HTML answer (the error
  // page), the "message" of a JSON one, the text of a short plain one.
  function messageOf(xhr) {
    var type = (xhr.getResponseHeader("Content-Type") || "").toLowerCase();
    var body = xhr.responseText || "";
    try {
      if (type.indexOf("text/html") === 0) {
        var doc = new DOMParser().parseFromString(body, "text/html");
        var node = doc.querySelector("[data-error-message]");
        if (node && node.textContent.trim()) { return node.textContent.trim(); }
      } else if (type.indexOf("application/json") === 0) {
        var data = JSON.parse(body);
        if (data && typeof data.message === "string" && data.message) { return data.message; }
      } else if (type.indexOf("text/plain") === 0 && body.trim() && body.length < 500) {
        return body.trim();
      }
    } catch (ignored) { /* fall through to the status line */ }
    return "The console answered " + xhr.status + (xhr.statusText ? " (" + xhr.statusText + ")" : "")
      + ": the request was not carried out.";
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    if (xhr && xhr.status >= 400 && xhr.getResponseHeader("Console-Swap") === "form") {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // A new request the operator made (a click, a submit) clears the last message; a poll does not.
  document.addEventListener("htmx:beforeRequest", function (event) {
    var config = event.detail.requestConfig;
    var box = region();
    if (box && config && config.triggeringEvent) { box.textContent = ""; }
  });

  document.addEventListener("htmx:responseError", function (event) {
    show(messageOf(event.detail.xhr));
  });

  document.addEventListener("htmx:sendError", function () {
    show("No answer from the console: the connection was lost or the server is down. What you did "
      + "may not have been carried out; try again when the console is reachable.");
  });

  document.addEventListener("htmx:timeout", function () {
    show("The console did not answer in time: what you did may not have been carried out; try again.");
  });
})();
