// The API client: the token in session storage, `Authorization: Bearer` on every
// call, and the API's JSON errors ({"error": {"code", "message"}}) as ApiError.

const KEY = "edgefn.token";
const BASE = new URL("../api/v1", document.baseURI).pathname;

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

async function errorOf(response) {
  let code = "http_" + response.status;
  let message = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body && body.error) {
      code = String(body.error.code ?? code);
      message = String(body.error.message ?? message);
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, code, message);
}

// One call; returns {body, total} (total from X-Total-Count, when present).
export async function call(method, path, { body, auth = true } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const bearer = token.get();
  if (auth && bearer) headers.Authorization = "Bearer " + bearer;
  let response;
  try {
    response = await fetch(BASE + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (exc) {
    throw new ApiError(0, "unreachable", "the control plane did not answer: " + exc.message);
  }
  if (!response.ok) throw await errorOf(response);
  const total = response.headers.get("X-Total-Count");
  const data = response.status === 204 ? null : await response.json();
  return { body: data, total: total === null ? null : Number(total) };
}

export async function get(path) {
  return (await call("GET", path)).body;
}

export async function post(path, body) {
  return (await call("POST", path, { body })).body;
}

export async function login(email, password) {
  const out = await call("POST", "/auth/login", { body: { email, password }, auth: false });
  return out.body.token;
}
