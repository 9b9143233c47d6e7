// The one way this site talks to the API. Every call goes through send():
// - a relative /api base: the browser sees one origin, locally and deployed;
// - JSON in and out, and the server's `message` on every error (ApiError);
// - the access token lives in this module's memory only, never in Web Storage;
// - a rejected token is handled here, once: refresh (one at a time, across tabs) and retry once,
//   or report the end of the session to whoever registered with onSessionEnded().

import type { ErrorBody, SignedIn } from './types';

const BASE = '/api';
const REFRESH_LOCK = 'gatehouse-refresh';

export class ApiError extends Error {
	readonly status: number;
	readonly body: ErrorBody;

	constructor(status: number, body: ErrorBody) {
		super(body.message);
		this.name = 'ApiError';
		this.status = status;
		this.body = body;
	}
}

export interface Reply<T> {
	data: T;
	status: number;
	headers: Headers;
}

export interface SendOptions {
	body?: unknown;
	headers?: Record<string, string>;
	/** false for the routes that take no bearer token (signup, login). */
	auth?: boolean;
}

let accessToken: string | null = null;
let refreshing: Promise<boolean> | null = null;
let sessionEnded: (() => void) | null = null;

/** Called when a refresh could not renew the session (logged out elsewhere, expired, ...). */
export function onSessionEnded(handler: () => void): void {
	sessionEnded = handler;
}

export function setAccessToken(token: string | null): void {
	accessToken = token;
}

export async function send<T>(
	method: string,
	path: string,
	options: SendOptions = {}
): Promise<Reply<T>> {
	const auth = options.auth ?? true;
	if (auth && accessToken === null && !(await renew())) {
		endSession();
		throw new ApiError(401, { message: 'Your session has ended; please log in again.' });
	}
	let reply = await call(method, path, options, auth);
	if (auth && rejectedToken(reply)) {
		// The token expired or was revoked: renew it once and retry once.
		reply = (await renew()) ? await call(method, path, options, auth) : reply;
		if (rejectedToken(reply)) {
			endSession();
			throw new ApiError(401, { message: 'Your session has ended; please log in again.' });
		}
	}
	if (reply.status >= 400) {
		throw new ApiError(reply.status, reply.body as ErrorBody);
	}
	return { data: reply.body as T, status: reply.status, headers: reply.headers };
}

/**
 * Get a new access token from the HttpOnly refresh cookie. Resolves false when there is no
 * session to renew; throws ApiError when the API could not answer (rate limit, outage).
 */
export function renew(): Promise<boolean> {
	// One refresh per tab at a time; Web Locks make it one per browser (the cookie is shared,
	// and each refresh rotates it).
	refreshing ??= withLock(refreshOnce).finally(() => {
		refreshing = null;
	});
	return refreshing;
}

async function refreshOnce(): Promise<boolean> {
	let reply: RawReply;
	try {
		reply = await exchange('POST', '/auth/refresh', {
			// The API accepts the cookie only with this header (a cross-site form cannot send it).
			'X-Requested-With': 'fetch'
		});
	} catch {
		throw new ApiError(0, { message: 'The server could not be reached; check your connection.' });
	}
	if (reply.status === 200) {
		accessToken = (reply.body as SignedIn).token;
		return true;
	}
	accessToken = null;
	if (reply.status === 429 || reply.status >= 500) {
		throw new ApiError(reply.status, reply.body as ErrorBody);
	}
	return false;
}

function endSession(): void {
	accessToken = null;
	sessionEnded?.();
}

async function withLock<T>(task: () => Promise<T>): Promise<T> {
	if (typeof navigator !== 'undefined' && navigator.locks) {
		return navigator.locks.request(REFRESH_LOCK, task);
	}
	return task();
}

interface RawReply {
	status: number;
	body: unknown;
	headers: Headers;
	/** Answered by API Gateway itself rather than the app. */
	gateway: boolean;
}

async function call(
	method: string,
	path: string,
	options: SendOptions,
	auth: boolean
): Promise<RawReply> {
	const headers: Record<string, string> = { Accept: 'application/json', ...options.headers };
	let body: string | undefined;
	if (options.body !== undefined) {
		headers['Content-Type'] = 'application/json';
		body = JSON.stringify(options.body);
	}
	if (auth && accessToken !== null) {
		headers['Authorization'] = `Bearer ${accessToken}`;
	}
	try {
		return await exchange(method, path, headers, body);
	} catch {
		throw new ApiError(0, { message: 'The server could not be reached; check your connection.' });
	}
}

async function exchange(
	method: string,
	path: string,
	headers: Record<string, string>,
	body?: string
): Promise<RawReply> {
	const response = await fetch(BASE + path, {
		method,
		headers,
		body,
		credentials: 'same-origin',
		cache: 'no-store'
	});
	const decoded = await decode(response);
	return { ...decoded, status: response.status, headers: response.headers };
}

async function decode(response: Response): Promise<{ body: unknown; gateway: boolean }> {
	const text = await response.text();
	let parsed: unknown = null;
	try {
		parsed = text ? JSON.parse(text) : null;
	} catch {
		parsed = null;
	}
	if (response.ok) {
		return { body: parsed, gateway: false };
	}
	// Every error the app sends has `message`. API Gateway's own answers carry an error type
	// header, and their wording is its own: `Message` by default, or `message` in the JSON
	// gateway responses the API stack configures.
	const record = (parsed ?? {}) as Record<string, unknown>;
	const said = String(record.message ?? record.Message ?? '');
	const gateway =
		response.headers.has('x-amzn-ErrorType') ||
		(response.status === 401 && said === 'Unauthorized') ||
		(response.status === 403 && said.startsWith('User is not authorized to access this resource'));
	const message =
		typeof record.message === 'string'
			? record.message
			: typeof record.Message === 'string'
				? record.Message
				: `The server answered ${response.status} ${response.statusText}`.trim();
	return { body: { ...record, message }, gateway };
}

/**
 * The access token was refused by the authorizer, not by the route: API Gateway's own 401
 * (missing token) or 403 (its Deny for a bad, expired or revoked token). The app's own 401s and
 * 403s (a wrong current password, the admin role required) are ordinary errors.
 */
function rejectedToken(reply: RawReply): boolean {
	return (reply.status === 401 || reply.status === 403) && reply.gateway;
}
