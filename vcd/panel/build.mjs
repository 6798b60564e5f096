// Builds the panel into dist/ (what vcd serves, see vcd/webpanel.py's MANIFEST):
// one script bundle, one stylesheet (Pico's classless CSS and ours), the page and its icon.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";

const dist = new URL("./dist/", import.meta.url);
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist);
await build({
  entryPoints: { panel: "src/main.js" },
  bundle: true,
  minify: true,
  format: "iife",
  target: ["chrome100", "firefox100", "safari15"],
  outdir: "dist",
  legalComments: "eof",
});
await build({
  entryPoints: { panel: "src/panel.css" },
  bundle: true,
  minify: true,
  outdir: "dist",
  legalComments: "eof",
});
for (const file of ["index.html", "favicon.svg"]) {
  copyFileSync(new URL(`./src/${file}`, import.meta.url), new URL(file, dist));
}
