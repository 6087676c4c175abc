// Unsaved-changes marker: a protocol form that was edited shows "● unsaved changes" beside its title,
// and leaving the page asks first. A save (the section is swapped or the page reloads) clears it.
(function () {
  "use strict";
  function mark(event) {
    var form = event.target.closest && event.target.closest("form[data-track-unsaved]");
    if (!form) { return; }
    form.dataset.dirty = "1";
    var section = form.closest("section.protocol");
    var marker = section && section.querySelector(".unsaved-marker");
    if (marker) { marker.hidden = false; }
  }
  document.addEventListener("input", mark);
  document.addEventListener("change", mark);
  document.addEventListener("submit", function (event) {
    if (event.target.matches && event.target.matches("form[data-track-unsaved]")) {
      delete event.target.dataset.dirty;   // the save itself is not leaving with unsaved changes
    }
  }, true);
  window.addEventListener("beforeunload", function (event) {
    if (document.querySelector("form[data-track-unsaved][data-dirty]")) {
      event.preventDefault();
      event.returnValue = "";
    }
  });
})();
