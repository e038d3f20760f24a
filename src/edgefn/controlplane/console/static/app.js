// The console's shell: sign-in, the tabs, hash routing, and the error banner.
// Views live in their own modules and render into <main>.

import { ApiError, get, login, token } from "./api.js";
import { h, replace } from "./dom.js";
import * as audit from "./audit.js";
import * as deployments from "./deployments.js";
import * as functions from "./functions.js";
import * as nodes from "./nodes.js";

const VIEWS = { functions, deployments, nodes, audit };
const main = document.getElementById("view");
const banner = document.getElementById("error");
const tabs = document.getElementById("tabs");
const signout = document.getElementById("signout");

function showError(exc) {
  if (exc instanceof ApiError && exc.status === 401) {
    // The token is gone or was never good: ask for another.
    token.clear();
    renderSignIn(exc);
    return;
  }
  say(exc);
}

function say(exc) {
  const text = exc instanceof ApiError ? `${exc.code}: ${exc.message}` : String(exc.message ?? exc);
  replace(banner, h("strong", {}, "Error "), text, " ",
    h("button", { type: "button", class: "quiet", onclick: clearError }, "Dismiss"));
  banner.hidden = false;
}

function clearError() {
  banner.hidden = true;
  banner.replaceChildren();
}

// What a view gets: a way to tell whether it is still shown, timers that stop when
// it is not, and the error banner.
class Screen {
  constructor() {
    this.timers = [];
    this.closed = false;
  }
  alive() {
    return !this.closed;
  }
  every(ms, fn) {
    this.timers.push(setInterval(() => this.alive() && fn(), ms));
  }
  close() {
    this.closed = true;
    this.timers.forEach(clearInterval);
  }
  error(exc) {
    if (this.alive()) showError(exc);
  }
}

let current = null;

// The token comes only from the sign-in form: a link that signed its visitor in
// (`#token=...`) would let anyone sign a victim into the link maker's account and
// watch what they deploy (login CSRF). Such a fragment is dropped, unused, and
// leaves the address bar and the history.
let droppedToken = false;
function dropTokenFragment() {
  if (!/(^#|&)token=/.test(location.hash)) return;
  droppedToken = true;
  history.replaceState(null, "", location.pathname + location.search);
}

function route() {
  if (current) current.close();
  current = new Screen();
  if (!token.get()) {
    renderSignIn(droppedToken ? "A token in a link is not used: sign in with this form." : "");
    droppedToken = false;
    return;
  }
  const [name, ...rest] = location.hash.replace(/^#/, "").split("/");
  const view = VIEWS[name] ? name : "functions";
  tabs.hidden = false;
  signout.hidden = false;
  for (const link of tabs.querySelectorAll("a")) {
    if (link.dataset.tab === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  replace(main, h("p", { class: "loading" }, "Loading…"));
  const screen = current;
  VIEWS[view]
    .render(main, rest.map(decodeURIComponent), screen)
    .catch((exc) => screen.error(exc));
}

function renderSignIn(reason) {
  if (current) current.close();
  current = new Screen();
  tabs.hidden = true;
  signout.hidden = true;
  const form = document.getElementById("signin-template").content.cloneNode(true);
  replace(main, form);
  if (reason) say(reason);
  const signedIn = async (value) => {
    token.set(value);
    try {
      await get("/functions?limit=1");
    } catch (exc) {
      token.clear();
      say(exc);
      return;
    }
    clearError();
    if (!location.hash || location.hash === "#") location.hash = "#functions";
    else route();
  };
  main.querySelector('[data-form="token"]').addEventListener("submit", (event) => {
    event.preventDefault();
    signedIn(new FormData(event.target).get("token").trim());
  });
  main.querySelector('[data-form="login"]').addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(event.target);
    try {
      await signedIn(await login(data.get("email"), data.get("password")));
    } catch (exc) {
      say(exc);
    }
  });
}

signout.addEventListener("click", () => {
  token.clear();
  clearError();
  location.hash = "";
  renderSignIn();
});

window.addEventListener("hashchange", () => {
  clearError();
  route();
});
dropTokenFragment();
route();
