// "Show" / "Hide" for password fields (templates/partials/account/password.html).
// The buttons are hidden in the markup, so without JavaScript none is offered.
// One delegated listener: buttons swapped in later by htmx work without re-binding.
(function () {
  "use strict";

  function reveal(root) {
    root.querySelectorAll("[data-password-toggle][hidden]").forEach(function (button) {
      button.hidden = false;
    });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-password-toggle]");
    if (!button) return;
    var input = document.getElementById(button.getAttribute("data-password-toggle"));
    if (!input) return;
    var showing = input.type === "text";
    input.type = showing ? "password" : "text";
    button.setAttribute("aria-pressed", showing ? "false" : "true");
    button.firstChild.nodeValue = showing ? "Show" : "Hide";
  });

  document.addEventListener("DOMContentLoaded", function () { reveal(document); });
  document.addEventListener("htmx:afterSettle", function (event) { reveal(event.target); });
})();
