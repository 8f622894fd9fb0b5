/* Barycenter passkey shim: runs WebAuthn ceremonies for [data-passkey-action] buttons.
 *
 * A button says what to do:
 *   data-passkey-action="register" | "authenticate"
 *   data-start="/…/start"   POST (JSON) → PublicKeyCredential{Creation,Request}OptionsJSON
 *   data-finish="/…/finish" POST (JSON {credential, …fields}) → HTML to swap, or HX-Redirect
 *   data-target="#id"       the element the finish HTML replaces (outerHTML)
 *   data-mode, data-return-to  extra fields sent to start and finish
 *   data-conditional        (login page) also start passkey autofill on page load
 * Fields of the enclosing [data-passkey-form] (e.g. "name") are sent too. Messages go to the
 * nearest [data-passkey-status] (role="alert"). One delegated listener, so buttons that
 * htmx swaps in later work without re-binding; one AbortController for the ceremony.
 * WebAuthn Signal API (feature-detected): signalAllAcceptedCredentials from a
 * [data-signal-accepted] marker (each used once) and from a passkey sign-in's answer;
 * signalUnknownCredential when a passkey sign-in is refused with code "unknown-credential".
 */
(function () {
  "use strict";

  let controller = null;

  // ---- encoding: the browser's own JSON helpers, with a small fallback --------------
  function b64urlToBuffer(value) {
    const base64 = value.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "===".slice((base64.length + 3) % 4);
    const binary = atob(padded);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }

  function bufferToB64url(buffer) {
    const bytes = new Uint8Array(buffer);
    let binary = "";
    for (let i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function creationOptions(json) {
    if (PublicKeyCredential.parseCreationOptionsFromJSON) {
      return PublicKeyCredential.parseCreationOptionsFromJSON(json);
    }
    const options = Object.assign({}, json);
    options.challenge = b64urlToBuffer(json.challenge);
    options.user = Object.assign({}, json.user, { id: b64urlToBuffer(json.user.id) });
    options.excludeCredentials = (json.excludeCredentials || []).map(function (c) {
      return Object.assign({}, c, { id: b64urlToBuffer(c.id) });
    });
    return options;
  }

  function requestOptions(json) {
    if (PublicKeyCredential.parseRequestOptionsFromJSON) {
      return PublicKeyCredential.parseRequestOptionsFromJSON(json);
    }
    const options = Object.assign({}, json);
    options.challenge = b64urlToBuffer(json.challenge);
    options.allowCredentials = (json.allowCredentials || []).map(function (c) {
      return Object.assign({}, c, { id: b64urlToBuffer(c.id) });
    });
    return options;
  }

  function credentialToJSON(credential) {
    if (typeof credential.toJSON === "function") return credential.toJSON();
    const r = credential.response;
    const json = {
      id: credential.id,
      rawId: bufferToB64url(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: { clientDataJSON: bufferToB64url(r.clientDataJSON) },
    };
    if (r.attestationObject) {
      json.response.attestationObject = bufferToB64url(r.attestationObject);
      json.response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      json.response.authenticatorData = bufferToB64url(r.authenticatorData);
      json.response.signature = bufferToB64url(r.signature);
      if (r.userHandle) json.response.userHandle = bufferToB64url(r.userHandle);
    }
    return json;
  }

  // ---- messages -----------------------------------------------------------------------
  function describeError(error) {
    switch (error && error.name) {
      case "NotAllowedError":
        return "The passkey request was cancelled or timed out. Nothing was changed.";
      case "InvalidStateError":
        return "This device already has a passkey for your account.";
      case "AbortError":
        return "";
      case "SecurityError":
        console.error("Passkey configuration error", error);
        return "Passkeys are not available on this address. Please contact your administrator.";
      case "NotSupportedError":
        return "This browser or device doesn't support the kind of passkey needed.";
      default:
        return "The passkey request failed. Please try again.";
    }
  }

  function statusFor(button) {
    const scope = button.closest("[data-passkey-scope]") || document;
    return scope.querySelector("[data-passkey-status]") || document.querySelector("[data-flash]");
  }

  // kind "error" styles the message as one (app.css); anything else is progress.
  function show(region, message, kind) {
    if (!region) return;
    region.textContent = message;
    region.setAttribute("data-kind", message ? kind || "error" : "");
  }

  // A refused name ("Give the passkey a name."): the field is marked and described by it.
  function markField(button, region, invalid) {
    const form = button.closest("[data-passkey-form]");
    const input = form && form.querySelector('input[name="name"]');
    if (!input || !region) return;
    if (!region.id) region.id = (input.id || "passkey") + "-status";
    if (invalid) {
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", region.id);
    } else if (input.getAttribute("aria-describedby") === region.id) {
      input.removeAttribute("aria-invalid");
      input.removeAttribute("aria-describedby");
    }
  }

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  // A refusal from our server: its message for the page, and its JSON (`code`, …) if any.
  class ServerError extends Error {
    constructor(message, data) {
      super(message);
      this.data = data || {};
    }
  }

  // The server wants recent authentication first ("Confirm it's you", SPEC §4.1): `step`
  // is the URL of the section showing that step, loaded in place of the current one.
  class ReauthRequired extends ServerError {
    constructor(message, step) {
      super(message, { code: "reauth-required", step: step });
      this.step = step;
    }
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json, text/html",
        "X-CSRFToken": csrfToken(),
        "HX-Request": "true", // answer with the partial, like an htmx request
      },
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      let message = "Something went wrong. Please try again.";
      let data = null;
      let error = null;
      try {
        data = await response.json();
        if (data && data.redirect && response.status === 401) {
          window.location.assign(data.redirect);
        }
        if (data && typeof data.detail === "string") message = data.detail;
        if (data && data.code === "reauth-required" && typeof data.step === "string") {
          error = new ReauthRequired(message, data.step);
        }
      } catch (_) {
        /* not JSON: keep the generic message */
      }
      const refusal = error || new ServerError(message, data);
      refusal.status = response.status; // 422: a field's value was refused (marked)
      throw refusal;
    }
    return response;
  }

  function fieldsOf(button) {
    const fields = {};
    const form = button.closest("[data-passkey-form]");
    if (form) {
      new FormData(form).forEach(function (value, key) {
        if (typeof value === "string") fields[key] = value;
      });
    }
    if (button.dataset.mode) fields.mode = button.dataset.mode;
    if (button.dataset.returnTo) fields.return_to = button.dataset.returnTo;
    return fields;
  }

  async function applyFinish(response, button, focusedAtStart) {
    const location = response.headers.get("HX-Redirect");
    if (location) {
      // A passkey sign-in answers with the credentials the account has now (Signal API).
      let answer = null;
      try {
        answer = await response.json();
      } catch (_) {
        /* no JSON body */
      }
      if (answer && answer.signal) await signalAcceptedIds(answer.signal);
      window.location.assign(location);
      return;
    }
    const html = await response.text();
    const target = document.querySelector(button.dataset.target || "main");
    if (target && window.htmx) {
      window.htmx.swap(target, html, { swapStyle: "outerHTML" });
    }
    // The other sections this change affected refresh themselves ("refresh-activity, …";
    // the answered section is never among them).
    const trigger = response.headers.get("HX-Trigger");
    if (trigger && window.htmx) {
      trigger.split(",").forEach(function (name) {
        if (name.trim()) window.htmx.trigger(document.body, name.trim());
      });
    }
    const swapped = document.querySelector(button.dataset.target || "main");
    // focus and announcement after a swap are page behaviour (static/js/page.js)
    // (unless the person moved it elsewhere while the ceremony ran)
    const page = window.Barycenter;
    if (page && page.focusNew) page.focusNew(swapped, focusedAtStart);
    signalAccepted(swapped);
  }

  // ---- the ceremony -------------------------------------------------------------------
  async function run(button, mediation) {
    if (!window.PublicKeyCredential) {
      show(statusFor(button), "This browser doesn't support passkeys.");
      return;
    }
    if (controller) controller.abort();
    // where the focus was (not every browser focuses a clicked button): see applyFinish
    const focusedAtStart = document.activeElement;
    const mine = new AbortController();
    controller = mine;
    const status = statusFor(button);
    const fields = fieldsOf(button);
    const register = button.dataset.passkeyAction === "register";
    if (!mediation) {
      show(status, "");
      markField(button, status, false);
      button.setAttribute("aria-busy", "true");
      button.disabled = true;
    }
    try {
      const options = await (await post(button.dataset.start, fields)).json();
      let credential;
      if (register) {
        credential = await navigator.credentials.create({
          publicKey: creationOptions(options),
          signal: mine.signal,
        });
      } else {
        const request = { publicKey: requestOptions(options), signal: mine.signal };
        if (mediation) request.mediation = mediation;
        credential = await navigator.credentials.get(request);
      }
      if (!credential) throw new DOMException("No credential", "NotAllowedError");
      const body = Object.assign({}, fields, { credential: credentialToJSON(credential) });
      show(status, "Checking…", "progress");
      let response;
      try {
        response = await post(button.dataset.finish, body);
      } catch (error) {
        // The server doesn't know this passkey (removed here): tell the password manager.
        if (!register && error instanceof ServerError) {
          signalUnknown(error.data, credential, options);
        }
        throw error;
      }
      show(status, "");
      await applyFinish(response, button, focusedAtStart);
    } catch (error) {
      if (error instanceof ReauthRequired && window.htmx && error.step.startsWith("/")) {
        // swap the section into its "Confirm it's you" state; the focus goes to its heading
        window.htmx.ajax("GET", error.step, {
          target: button.dataset.target || "main",
          swap: "outerHTML",
        });
        return;
      }
      if (mine.signal.aborted && !(error instanceof ServerError)) return;
      // Autofill (conditional mediation) runs unasked: when the browser ends it, say
      // nothing (an alert on page load would be read out to screen-reader users).
      if (mediation && !(error instanceof ServerError)) return;
      const message = error instanceof ServerError ? error.message : describeError(error);
      if (message) show(status, message);
      if (error instanceof ServerError && error.status === 422) markField(button, status, true);
    } finally {
      if (controller === mine) controller = null;
      if (button.isConnected) {
        button.removeAttribute("aria-busy");
        button.disabled = false;
        // Disabling the focused button dropped the focus: give it back (next to the message).
        const active = document.activeElement;
        if (!mediation && (!active || active === document.body)) button.focus();
      }
    }
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest("[data-passkey-action]");
    if (!button) return;
    event.preventDefault();
    run(button, null);
  });

  // Enter in a ceremony form's field runs the ceremony instead of submitting the form.
  document.addEventListener("submit", function (event) {
    const form = event.target.closest("[data-passkey-form]");
    if (!form) return;
    event.preventDefault();
    const button = form.querySelector("[data-passkey-action]");
    if (button) button.click();
  });

  // ---- WebAuthn Signal API: keep password managers in step with our passkeys ----------
  // All best effort and feature-detected: browsers without the API simply skip it.
  function hasSignal(name) {
    return !!window.PublicKeyCredential && typeof PublicKeyCredential[name] === "function";
  }

  // {rpId, userId, allAcceptedCredentialIds}: the passkeys this site still accepts.
  function signalAcceptedIds(accepted) {
    if (!hasSignal("signalAllAcceptedCredentials") || !accepted) return Promise.resolve();
    const call = PublicKeyCredential.signalAllAcceptedCredentials({
      rpId: accepted.rpId,
      userId: accepted.userId,
      allAcceptedCredentialIds: accepted.allAcceptedCredentialIds || [],
    }).catch(function () {
      /* best effort */
    });
    // never hold up a navigation for long
    return Promise.race([call, new Promise(function (done) { window.setTimeout(done, 1000); })]);
  }

  // A [data-signal-accepted] marker (the account page, or the passkeys section after a
  // removal) is used once, then removed: background refreshes don't repeat the signal.
  function signalAccepted(root) {
    const marker = root && root.querySelector("[data-signal-accepted]");
    if (!marker) return;
    marker.removeAttribute("data-signal-accepted");
    signalAcceptedIds({
      rpId: marker.dataset.rpId,
      userId: marker.dataset.userId,
      allAcceptedCredentialIds: (marker.dataset.credentialIds || "").split(" ").filter(Boolean),
    });
  }

  // A passkey sign-in refused with `unknown-credential`: only for the credential that the
  // authenticator just returned, and only when the server names that same one.
  function signalUnknown(data, credential, options) {
    if (!data || data.code !== "unknown-credential" || !hasSignal("signalUnknownCredential")) return;
    if (!credential || data.credentialId !== credential.id) return;
    PublicKeyCredential.signalUnknownCredential({
      rpId: (options && options.rpId) || window.location.hostname,
      credentialId: credential.id,
    }).catch(function () {
      /* best effort */
    });
  }

  // A removal's answer (or a refresh) may bring a [data-signal-accepted] marker.
  document.addEventListener("htmx:afterSettle", function () {
    signalAccepted(document.getElementById("passkeys"));
  });

  // ---- passkey autofill on the login page (conditional mediation) ---------------------
  async function startConditional() {
    const button = document.querySelector("[data-passkey-action][data-conditional]");
    if (!button || !window.PublicKeyCredential) return;
    if (!PublicKeyCredential.isConditionalMediationAvailable) return;
    try {
      if (!(await PublicKeyCredential.isConditionalMediationAvailable())) return;
    } catch (_) {
      return;
    }
    run(button, "conditional");
  }

  function onLoad() {
    signalAccepted(document); // the account page: once per page load
    startConditional();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", onLoad);
  } else {
    onLoad();
  }
})();
