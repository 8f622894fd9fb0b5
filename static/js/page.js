/* Barycenter page behaviour (progressive enhancement: everything works without it).
 *
 * - Sections refresh in the background ("refresh-<id>" events, named by the server's
 *   HX-Trigger after a change elsewhere) only when at rest: a section marked [data-open]
 *   (codes on screen, a rename form, a removal question, a confirmation), running a
 *   passkey ceremony, or with a field the person has typed in keeps its state; closing
 *   the step (or the ceremony's answer) loads the fresh section anyway, and a section
 *   left at rest without either catches up then.
 * - After a swap the focus goes to the new content and its notice is announced; a refused
 *   or failed htmx request puts its message in the alert region. The passkey shim asks for
 *   the same focus after its own swaps: window.Barycenter.focusNew(element).
 * - After a full-page form post with an error, focus goes to the invalid field (or the
 *   alert), so the person notices it.
 * - <time datetime> shows the server's words in UTC; here it becomes the viewer's own
 *   time zone and a relative form ("5 minutes ago"); the exact time stays in the title.
 * - Recovery codes: "Copy" (Clipboard API) and "Print" appear only where they work.
 */
(function () {
  "use strict";

  // ---- background refreshes skip open sections --------------------------------------
  // Open: a step is open in it ([data-open]), a passkey ceremony runs in it (its button is
  // [aria-busy]), or the person has typed in one of its fields (a passkey's name): a
  // refresh would throw that away. The section's own answer brings it up to date.
  function isOpen(element) {
    if (!element) return false;
    if (element.matches("[data-open]")) return true;
    if (element.querySelector("[data-open], [aria-busy='true']")) return true;
    return Array.from(element.querySelectorAll("input:not([type=hidden]), textarea")).some(
      function (field) {
        return field.value !== field.defaultValue;
      }
    );
  }

  function isBackground(config) {
    const type = config && config.triggeringEvent && config.triggeringEvent.type;
    return typeof type === "string" && type.indexOf("refresh-") === 0;
  }

  // A skipped refresh is remembered on its section ([data-stale]: the event's name).
  function skip(config, section) {
    if (section) section.dataset.stale = config.triggeringEvent.type;
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    const config = event.detail.requestConfig;
    if (isBackground(config) && isOpen(event.detail.target)) {
      event.preventDefault();
      skip(config, event.detail.target);
    }
  });

  // A refresh already on its way when a step opened (a click right after a change) must not
  // land on the step either: checked again when its answer arrives.
  document.addEventListener("htmx:beforeSwap", function (event) {
    const config = event.detail.requestConfig;
    if (isBackground(config) && isOpen(event.detail.target)) {
      event.detail.shouldSwap = false;
      skip(config, event.detail.target);
    }
  });

  // ...and done when the person leaves the section at rest (a cancelled ceremony, a name
  // typed then put back): checked once the focus has landed, and not while the window is in
  // the background (switching tabs leaves nothing). A step's or a ceremony's own answer
  // replaces the section with fresh content anyway, [data-stale] with it.
  document.addEventListener("focusout", function (event) {
    const section = event.target.closest("[data-stale]");
    if (!section) return;
    window.setTimeout(function () {
      if (!section.isConnected || !section.dataset.stale || !document.hasFocus()) return;
      if (section.contains(document.activeElement) || isOpen(section)) return;
      const name = section.dataset.stale;
      delete section.dataset.stale;
      if (window.htmx) window.htmx.trigger(document.body, name);
    }, 0);
  });

  // ---- a newer message replaces an older one in the same place -----------------------
  // A swapped-in section brings its own message; the page-wide alert is then stale.
  document.addEventListener("htmx:beforeSwap", function () {
    const flash = document.querySelector("[data-flash]");
    if (flash) flash.textContent = "";
  });

  // A new ceremony: the older page-wide message gives way.
  document.addEventListener("click", function (event) {
    if (!event.target.closest("[data-passkey-action]")) return;
    const flash = document.querySelector("[data-flash]");
    if (flash) flash.textContent = "";
  });

  // ---- after a swap: focus, announcement; errors into the alert region ---------------
  // Focus after a swap: the LAST [data-focus] in the new content (a step's heading comes
  // after the card's own heading, so the most specific one wins). A [data-focus] that is a
  // container (the rename form) hands the focus to its first field.
  const FIELD = "input:not([type=hidden]), select, textarea, button, a[href]";

  // The polite live region: emptied first, so that the same notice twice is read twice.
  function announce(message) {
    const announcer = document.querySelector("[data-announcer]");
    if (!announcer || !message) return;
    announcer.textContent = "";
    window.setTimeout(function () {
      announcer.textContent = message;
    }, 50);
  }

  // The person may have moved on while the answer was on its way (tapped into another
  // field, started typing): the focus is theirs then. It moves only if it is still where it
  // was when the request left (`from`), or went away with the replaced content.
  function focusIsFree(from) {
    const active = document.activeElement;
    return !active || active === document.body || !active.isConnected || active === from;
  }

  function focusNew(element, from) {
    if (!element) return;
    const marks = element.querySelectorAll("[data-focus]");
    let focus = marks.length ? marks[marks.length - 1] : null;
    if (focus && !focus.matches(FIELD + ", [tabindex]")) focus = focus.querySelector(FIELD);
    if (!focus) focus = element.querySelector(FIELD);
    if (focus && focusIsFree(from)) focus.focus({ preventScroll: false });
    const notice = element.querySelector('[role="status"]');
    announce(notice ? notice.textContent : "");
  }

  window.Barycenter = Object.assign(window.Barycenter || {}, { focusNew: focusNew });

  const focusedAtRequest = new WeakMap(); // request (its XMLHttpRequest) -> focused element
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (event.detail.xhr) focusedAtRequest.set(event.detail.xhr, document.activeElement);
  });

  document.addEventListener("htmx:afterSettle", function (event) {
    const flash = document.querySelector("[data-flash]");
    if (flash) flash.textContent = "";
    if (isBackground(event.detail.requestConfig)) return; // keep the focus where it is
    const target = event.detail.target;
    // htmx's target is the replaced element: find its successor by id
    const from = event.detail.xhr ? focusedAtRequest.get(event.detail.xhr) : undefined;
    focusNew(target && target.id ? document.getElementById(target.id) : null, from);
  });

  // A refused htmx request: its message in the page-wide alert (older ceremony messages
  // give way to it).
  document.addEventListener("htmx:responseError", function (event) {
    document.querySelectorAll("[data-passkey-status]").forEach(function (status) {
      status.textContent = "";
      status.removeAttribute("data-kind");
    });
    const flash = document.querySelector("[data-flash]");
    const xhr = event.detail.xhr;
    let message = "Something went wrong. Please try again.";
    if (xhr && xhr.status < 500 && xhr.responseText && xhr.responseText.length < 500) {
      message = xhr.responseText;
    }
    if (flash) {
      flash.textContent = message;
      flash.setAttribute("tabindex", "-1");
      flash.focus();
    }
  });

  document.addEventListener("htmx:sendError", function () {
    const flash = document.querySelector("[data-flash]");
    if (flash) flash.textContent = "The server could not be reached. Check your connection.";
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
