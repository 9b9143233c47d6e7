// Prints the gzipped size of what the first page loads (its HTML's scripts and stylesheets,
// followed through their static imports) and fails the build above the budget.
import { readFileSync, readdirSync } from 'node:fs';
import { join, posix } from 'node:path';
import { gzipSync } from 'node:zlib';

const BUILD = new URL('../build/', import.meta.url).pathname;
const BUDGET = 60 * 1024;

const html = readFileSync(join(BUILD, 'index.html'), 'utf8');
const pending = [];
const attribute = /<(?:link|script)\b[^>]*?(?:href|src)="(\/[^"]+\.(?:js|css))"/g;
for (const match of html.matchAll(attribute)) pending.push(match[1]);
// The bootstrapping script imports the entry points with import("...").
for (const match of html.matchAll(/import\("(\/[^"]+\.js)"\)/g)) pending.push(match[1]);

const seen = new Map();
while (pending.length > 0) {
	const path = pending.pop();
	if (seen.has(path)) continue;
	const source = readFileSync(join(BUILD, path));
	seen.set(path, gzipSync(source, { level: 9 }).length);
	if (path.endsWith('.js')) {
		// Static imports only: dynamic import() of other pages is not the first page's cost.
		const text = source.toString('utf8');
		for (const match of text.matchAll(
			/(?:^|[;}\s])import\s*(?:[^'"()]*?from\s*)?["']([^"']+\.js)["']/g
		)) {
			pending.push(posix.join(posix.dirname(path), match[1]));
		}
	}
}

const inline = gzipSync(Buffer.from(html), { level: 9 }).length;
let js = 0;
let css = 0;
for (const [path, size] of seen) {
	if (path.endsWith('.css')) css += size;
	else js += size;
}
const kb = (bytes) => `${(bytes / 1024).toFixed(1)} KB`;
console.log(
	`\nFirst page (/), gzipped: JS ${kb(js)} in ${[...seen.keys()].filter((p) => p.endsWith('.js')).length} files, CSS ${kb(css)}, total ${kb(js + css)} (budget ${kb(BUDGET)}); HTML ${kb(inline)}`
);
const files = readdirSync(join(BUILD, '_app', 'immutable', 'nodes')).length;
console.log(`Route chunks: ${files} (loaded on navigation)`);
if (js + css > BUDGET) {
	console.error(`The first page's JS + CSS is over the ${kb(BUDGET)} budget.`);
	process.exit(1);
}
