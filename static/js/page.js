/* Barycenter page behaviour (progressive enhancement: everything works without it).
 *
 * - Sections refresh in the background ("account-changed") only when at rest: a section
 *   marked [data-open] (codes on screen, a rename form, a removal question, a
 *   confirmation) keeps its state; closing the step loads the fresh section anyway.
 * - After a full-page form post with an error, focus goes to the invalid field (or the
 *   alert), so the person notices it.
 * - <time datetime> shows the server's words in UTC; here it becomes the viewer's own
 *   time zone and a relative form ("5 minutes ago"); the exact time stays in the title.
 * - Recovery codes: "Copy" (Clipboard API) and "Print" appear only where they work.
 */
(function () {
  "use strict";

  // ---- background refreshes skip open sections --------------------------------------
  function isOpen(element) {
    return !!(element && (element.matches("[data-open]") || element.querySelector("[data-open]")));
  }

  function isBackground(config) {
    return !!(config && config.triggeringEvent && config.triggeringEvent.type === "account-changed");
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    if (isBackground(event.detail.requestConfig) && isOpen(event.detail.target)) {
      event.preventDefault();
    }
  });

  // A refresh already on its way when a step opened (a click right after a change) must not
  // land on the step either: checked again when its answer arrives.
  document.addEventListener("htmx:beforeSwap", function (event) {
    if (isBackground(event.detail.requestConfig) && isOpen(event.detail.target)) {
      event.detail.shouldSwap = false;
    }
  });

  // ---- a newer message replaces an older one in the same place -----------------------
  // A swapped-in section brings its own message; the page-wide alert is then stale.
  document.addEventListener("htmx:beforeSwap", function () {
    const flash = document.querySelector("[data-flash]");
    if (flash) flash.textContent = "";
  });

  // A new ceremony or a refused htmx request: the older messages give way to the newer.
  document.addEventListener("click", function (event) {
    if (!event.target.closest("[data-passkey-action]")) return;
    const flash = document.querySelector("[data-flash]");
    if (flash) flash.textContent = "";
  });

  document.addEventListener("htmx:responseError", function () {
    document.querySelectorAll("[data-passkey-status]").forEach(function (status) {
      status.textContent = "";
      status.removeAttribute("data-kind");
    });
  });

  // ---- focus after a full-page post with an error -----------------------------------
  function focusError() {
    const main = document.querySelector("main");
    if (!main) return;
    const field = main.querySelector('input[aria-invalid="true"]');
    const alert = main.querySelector('.alert[role="alert"][tabindex]');
    const target = field || (alert && alert.textContent.trim() ? alert : null);
    if (target) target.focus();
  }

  // ---- times in the viewer's zone, and how long ago ---------------------------------
  const UNITS = [
    ["year", 365 * 24 * 3600],
    ["month", 30 * 24 * 3600],
    ["week", 7 * 24 * 3600],
    ["day", 24 * 3600],
    ["hour", 3600],
    ["minute", 60],
  ];

  function relative(date) {
    if (!window.Intl || !Intl.RelativeTimeFormat) return "";
    const seconds = (date.getTime() - Date.now()) / 1000;
    const words = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
    for (const [unit, size] of UNITS) {
      if (Math.abs(seconds) >= size) return words.format(Math.round(seconds / size), unit);
    }
    return "just now";
  }

  function localTimes(root) {
    if (!window.Intl || !Intl.DateTimeFormat) return;
    // (dateStyle can't be combined with timeZoneName: the fields one by one)
    const format = new Intl.DateTimeFormat(undefined, {
      year: "numeric",
      month: "short",
      day: "numeric",
      hour: "2-digit",
      minute: "2-digit",
      timeZoneName: "short",
    });
    // only the times our templates mark (components/forms.html moment()); other dates keep
    // the server's words
    root.querySelectorAll("time[datetime][data-relative]:not([data-local])").forEach(function (time) {
      const date = new Date(time.getAttribute("datetime"));
      if (isNaN(date.getTime())) return;
      time.setAttribute("data-local", "");
      time.title = time.textContent.trim(); // the server's words, in UTC
      const ago = relative(date);
      time.textContent = (ago ? ago + " — " : "") + format.format(date);
    });
  }

  // ---- Copy and Print for recovery codes --------------------------------------------
  function canCopy() {
    return !!(navigator.clipboard && navigator.clipboard.writeText && window.isSecureContext);
  }

  function enableCodeButtons(root) {
    root.querySelectorAll("[data-codes-copy]").forEach(function (button) {
      if (canCopy()) button.hidden = false;
    });
    root.querySelectorAll("[data-codes-print]").forEach(function (button) {
      if (typeof window.print === "function") button.hidden = false;
    });
  }

  function codesText(block) {
    const heading = block.querySelector(".codes-for");
    const codes = Array.from(block.querySelectorAll("ol.codes code")).map(function (code) {
      return code.textContent.trim();
    });
    return (heading ? heading.textContent.trim() + "\n\n" : "") + codes.join("\n") + "\n";
  }

  function say(block, message) {
    const status = block.querySelector("[data-codes-status]");
    if (status) status.textContent = message;
  }

  document.addEventListener("click", function (event) {
    const copy = event.target.closest("[data-codes-copy]");
    const print = event.target.closest("[data-codes-print]");
    const block = (copy || print) && (copy || print).closest("[data-codes]");
    if (!block) return;
    if (copy) {
      navigator.clipboard.writeText(codesText(block)).then(
        function () {
          say(block, "Copied the recovery codes.");
        },
        function () {
          say(block, "Copying was refused by the browser. Use Download instead.");
        },
      );
    } else {
      // Only this block is printed (static/css/app.css, @media print).
      document.body.setAttribute("data-printing", "");
      block.setAttribute("data-print-this", "");
      window.print();
    }
  });

  window.addEventListener("afterprint", function () {
    document.body.removeAttribute("data-printing");
    document.querySelectorAll("[data-print-this]").forEach(function (block) {
      block.removeAttribute("data-print-this");
    });
  });

  // ---- on load, and for every piece of content htmx (or passkeys.js) swaps in --------
  function enhance(root) {
    localTimes(root);
    enableCodeButtons(root);
  }

  document.addEventListener("htmx:load", function (event) {
    enhance(event.detail.elt || document);
  });

  function start() {
    focusError();
    enhance(document);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
