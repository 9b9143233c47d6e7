// The one way this site talks to the API. Every call goes through send():
// - a relative /api base: the browser sees one origin, locally and deployed;
// - JSON in and out, and the server's `message` on every error (ApiError);
// - the access token lives in this module's memory only, never in Web Storage;
// - a rejected token is handled here, once: refresh (one at a time, across tabs) and retry once,
//   or report the end of the session to whoever registered with onSessionEnded().

import type {
	EmailChanged,
	EmailVerified,
	ErrorBody,
	Message,
	SignedIn,
	TotpEnabled,
	TotpEnrolment
} from './types';

const BASE = '/api';
const REFRESH_LOCK = 'gatehouse-refresh';
/** How long a refresh may take while it holds the cross-tab lock. */
const REFRESH_TIMEOUT_MS = 10_000;
const ENDED = 'Your session has ended; please log in again.';

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
	/**
	 * A route the site can do without (the live updates' ticket): a token refused again right
	 * after a renewal throws ApiError instead of ending the session. A gateway that lacks the
	 * route answers 403 like a refused token, and a fresh token proves the session is alive.
	 */
	optional?: boolean;
}

let accessToken: string | null = null;
/** Whom this tab signed in as: a refresh must not switch it to another account. */
let signedInAs: string | null = null;
/** The session the token belongs to (every SignedIn answer names it). */
let sessionId: string | null = null;
let refreshing: Promise<boolean> | null = null;
/** Set when a refresh answered for another account than signedInAs. */
let switched = false;
let sessionEnded: ((otherAccount: boolean) => void) | null = null;

/**
 * Called when a refresh could not renew the session (logged out elsewhere, expired, ...), or
 * when the browser's session now belongs to another account (`otherAccount`).
 */
export function onSessionEnded(handler: (otherAccount: boolean) => void): void {
	sessionEnded = handler;
}

/** The token, the account and the session it belongs to (null: signed out). */
export function setAccessToken(
	token: string | null,
	username: string | null = null,
	session: string | null = null
): void {
	accessToken = token;
	signedInAs = token === null ? null : username;
	sessionId = token === null ? null : session;
	if (token !== null) switched = false; // news of an earlier session, read or not
}

/** The account this tab is signed in as, if any. */
export function currentUser(): string | null {
	return accessToken === null ? null : signedInAs;
}

/** The id of this tab's session (as GET /auth/sessions and `session.revoked` name it), if any. */
export function currentSession(): string | null {
	return accessToken === null ? null : sessionId;
}

export async function send<T>(
	method: string,
	path: string,
	options: SendOptions = {}
): Promise<Reply<T>> {
	const auth = options.auth ?? true;
	if (auth && accessToken === null && !(await renew())) {
		endSession();
		throw new ApiError(401, { message: ENDED });
	}
	const sentWith = accessToken;
	let reply = await call(method, path, options, auth);
	if (auth && rejectedToken(reply)) {
		// The token expired or was revoked: retry once, with the token another call already
		// renewed meanwhile if there is one, else with a renewed token.
		const renewed = accessToken !== null && accessToken !== sentWith ? true : await renew();
		reply = renewed ? await call(method, path, options, auth) : reply;
		if (renewed && options.optional && rejectedToken(reply)) {
			throw new ApiError(reply.status, reply.body as ErrorBody);
		}
		if (rejectedToken(reply)) {
			endSession();
			throw new ApiError(401, { message: ENDED });
		}
	}
	if (reply.status >= 400) {
		throw new ApiError(reply.status, reply.body as ErrorBody);
	}
	return { data: reply.body as T, status: reply.status, headers: reply.headers };
}

/**
 * Get a new access token from the HttpOnly refresh cookie. Resolves false when there is no
 * session to renew (the API's 401), or when the cookie now belongs to another account than the
 * one this tab signed in as; throws ApiError when the API could not answer (rate limit, outage,
 * no answer in time), leaving the session as it was.
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
		reply = await exchange(
			'POST',
			'/auth/refresh',
			// The API accepts the cookie only with this header (a cross-site form cannot send it).
			{ 'X-Requested-With': 'fetch' },
			undefined,
			// The lock makes every other tab wait for this request: never for long.
			timeout(REFRESH_TIMEOUT_MS)
		);
	} catch (error) {
		throw new ApiError(0, {
			message:
				error instanceof DOMException && error.name === 'AbortError'
					? 'The server took too long to answer; please try again.'
					: 'The server could not be reached; check your connection.'
		});
	}
	if (reply.status === 200) {
		const data = reply.body as SignedIn;
		if (signedInAs !== null && data.username !== signedInAs) {
			// Another tab signed in as someone else since: this tab must not act for them.
			setAccessToken(null);
			switched = true;
			return false;
		}
		setAccessToken(data.token, data.username, data.sessionId);
		return true;
	}
	if (reply.status === 401) {
		// The app's own answer: no session (no cookie, or an expired or revoked one).
		accessToken = null;
		return false;
	}
	// A rate limit, an outage, a gateway error: the session may well be alive; say why, and keep
	// the token so that the next call tries again.
	throw new ApiError(reply.status, reply.body as ErrorBody);
}

function endSession(): void {
	const otherAccount = switched;
	switched = false;
	setAccessToken(null);
	sessionEnded?.(otherAccount);
}

/** An AbortSignal that fires after `ms` (driven by setTimeout, which tests can fast-forward). */
function timeout(ms: number): AbortSignal {
	const controller = new AbortController();
	setTimeout(() => controller.abort(), ms);
	return controller.signal;
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
	body?: string,
	signal?: AbortSignal
): Promise<RawReply> {
	const response = await fetch(BASE + path, {
		method,
		headers,
		body,
		signal,
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
	// Every error has `message`. API Gateway's own answers (the authorizer's 401 and 403 among
	// them) carry an error type header; the 401's words are the original system's.
	const record = (parsed ?? {}) as Record<string, unknown>;
	const said = String(record.message ?? record.Message ?? '');
	const gateway =
		response.headers.has('x-amzn-ErrorType') ||
		(response.status === 401 && said === 'Invalid or expired token') ||
		(response.status === 403 && said === 'Access token revoked; please log in again');
	const message =
		typeof record.message === 'string'
			? record.message
			: typeof record.Message === 'string'
				? record.Message
				: `The server answered ${response.status} ${response.statusText}`.trim();
	return { body: { ...record, message }, gateway };
}

/**
 * The access token was refused by the authorizer, not by the route: API Gateway's own 401 (no,
 * bad or expired token) or 403 (its Deny for a revoked one). The app's own 401s and 403s (a
 * wrong current password, the admin role required) are ordinary errors.
 */
function rejectedToken(reply: RawReply): boolean {
	return (reply.status === 401 || reply.status === 403) && reply.gateway;
}

// The account's recovery, email and two-factor routes. The public ones take no bearer token: a
// link from a mail works in a browser that is not signed in.

/** Always the same answer, whether or not the account exists or has a verified address. */
export async function forgotPassword(login: string): Promise<Message> {
	return (await send<Message>('POST', '/auth/password/forgot', { auth: false, body: { login } }))
		.data;
}

/** Ends every session of the account. */
export async function resetPassword(token: string, password: string): Promise<Message> {
	return (
		await send<Message>('POST', '/auth/password/reset', { auth: false, body: { token, password } })
	).data;
}

export async function verifyEmail(token: string): Promise<EmailVerified> {
	return (await send<EmailVerified>('POST', '/auth/email/verify', { auth: false, body: { token } }))
		.data;
}

/** Mails a confirmation link to the new address (and a notice to the old one). */
export async function changeEmail(email: string, password: string): Promise<EmailChanged> {
	return (await send<EmailChanged>('PUT', '/auth/email', { body: { email, password } })).data;
}

/** The second step of a login whose password was right: the challenge and a code. */
export async function loginWithCode(challenge: string, code: string): Promise<SignedIn> {
	return (
		await send<SignedIn>('POST', '/auth/login/mfa', { auth: false, body: { challenge, code } })
	).data;
}

export async function startTotp(): Promise<TotpEnrolment> {
	return (await send<TotpEnrolment>('POST', '/auth/mfa/totp')).data;
}

/** Turns two-factor on; the answer holds the recovery codes, shown this once. */
export async function confirmTotp(code: string): Promise<TotpEnabled> {
	return (await send<TotpEnabled>('POST', '/auth/mfa/totp/confirm', { body: { code } })).data;
}

export async function disableTotp(password: string, code: string): Promise<Message> {
	return (await send<Message>('DELETE', '/auth/mfa/totp', { body: { password, code } })).data;
}
