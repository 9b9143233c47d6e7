import { sveltekit } from '@sveltejs/kit/vite';
import { defineConfig } from 'vite';

// `make dev` (tools/devstack.py) sets these; the defaults match its defaults.
const api = process.env.GATEHOUSE_API_URL ?? 'http://127.0.0.1:8000';
const ws = process.env.GATEHOUSE_WS_URL ?? 'http://127.0.0.1:8001';
const host = process.env.DEV_HOST ?? '127.0.0.1';
const port = Number(process.env.SITE_PORT ?? '5173');

export default defineConfig({
	plugins: [sveltekit()],
	server: {
		host,
		port,
		strictPort: true,
		// One origin in the browser, as deployed: /api/* goes to the API without the prefix, and
		// /ws (with its query string, the ticket) to the local WebSocket gateway (tools/wsgateway.py).
		proxy: {
			'^/api(/|$)': {
				target: api,
				rewrite: (path) => path.replace(/^\/api/, '') || '/'
			},
			'^/ws(\\?|$)': { target: ws, ws: true }
		}
	},
	build: {
		target: 'es2022',
		// Swagger UI (/docs only, loaded on demand) is one 1.5 MB chunk; the first page's size is
		// what matters, and scripts/sizes.js checks it against its budget.
		chunkSizeWarningLimit: 1600,
		// The sizes that matter are printed by scripts/sizes.js; build timings are noise here.
		rolldownOptions: { checks: { bundlerTimings: false } }
	}
});
