// A static site: every page is a prerendered shell, rendered in the browser.
export const ssr = false;
export const prerender = true;
export const trailingSlash = 'never';
