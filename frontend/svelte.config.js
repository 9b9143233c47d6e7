import adapter from '@sveltejs/adapter-static';
import { vitePreprocess } from '@sveltejs/vite-plugin-svelte';

/** @type {import('@sveltejs/kit').Config} */
const config = {
	preprocess: vitePreprocess(),
	kit: {
		// The Site stack (CloudFront) answers unknown non-/api paths with 200.html.
		adapter: adapter({ pages: 'build', assets: 'build', fallback: '200.html', strict: true }),
		// Absolute asset URLs: the fallback page is served at any depth.
		paths: { relative: false }
		// No <meta> CSP: the Content-Security-Policy header (CloudFront, and tools/siteserver.py
		// in the tests) is built from this build's own inline hashes by
		// cdk/gatehouse_infra/csp.py. Two policies would both apply and drift apart.
	}
};

export default config;
