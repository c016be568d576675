// A stand-in for ComfyUI's scripts/api.js: /view?filename=X is answered from workflows/assets/ by the test server.
export const api = {
  apiURL(path) {
    const q = new URLSearchParams(path.split("?")[1] || "");
    return `/workflows/assets/${q.get("filename")}`;
  },
};
