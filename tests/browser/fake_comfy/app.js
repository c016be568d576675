// A stand-in for ComfyUI's scripts/app.js in the browser test of the glue module: it only collects extensions.
export const app = {
  extensions: [],
  registerExtension(extension) {
    this.extensions.push(extension);
  },
};
