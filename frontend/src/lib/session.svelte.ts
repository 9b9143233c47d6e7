// Who is signed in, shared by every page. The credentials themselves stay inside api.ts.

import {
	ApiError,
	currentSession,
	loginWithCode,
	onSessionEnded,
	renew,
	send,
	setAccessToken
} from './api';
import { problem, type Problem } from './errors';
import { startLive, stopLive, subscribe } from './live.svelte';
import type { LiveEvent, LoginAnswer, Message, Profile, SessionRevoked, SignedIn } from './types';

export type Status = 'unknown' | 'anonymous' | 'signed-in';

class SessionState {
	status: Status = $state('unknown');
	profile: Profile | null = $state(null);
	/** A message for the login page, e.g. why the session ended. */
	notice: string = $state('');
	/** The user ended the session (logged out): no reason to come back to the page after login. */
	deliberate = $state(false);
	/** Why the session could not be restored (rate limit, outage): the server's message. */
	failure: Problem | null = $state(null);
}

export const session = new SessionState();

let restoring: Promise<void> | null = null;

// Whether this browser may hold a session: a flag, never a credential. It spares visitors who
// never logged in a refresh request (and a hit on the per-address limit) on every page load.
const HINT = 'gatehouse:session';

function hinted(): boolean {
	try {
		return localStorage.getItem(HINT) === '1';
	} catch {
		return true; // storage blocked: ask the API
	}
}

function hint(present: boolean): void {
	try {
		if (present) localStorage.setItem(HINT, '1');
		else localStorage.removeItem(HINT);
	} catch {
		// storage blocked: every load asks the API
	}
}

const ENDED = 'Your session has ended; please log in again.';
const ELSEWHERE = 'You were signed out on another device; please log in again.';
const DELETED = 'Your account has been deleted.';
const SWITCHED = 'Another account signed in in another tab of this browser; please log in again.';

onSessionEnded((otherAccount) => {
	// Already signed out here (say, "log out everywhere" answered while a page's live refresh
	// was still in flight): that request's refusal is no news, and the notice that says why the
	// session ended stays.
	if (session.status === 'anonymous') return;
	if (otherAccount) {
		// The browser's session is now someone else's: leave it (and its flag) to them.
		signedOut(SWITCHED, false, { tell: false, keepHint: true });
	} else {
		signedOut(ENDED, false);
	}
});

// Tabs tell each other about sign-ins and sign-outs, so that a tab never goes on showing one
// account's data while the browser's session belongs to another (or to nobody). The message
// names the account only over BroadcastChannel; the storage fallback is removed at once.
type TabNews = { type: 'signed-in'; username?: string } | { type: 'signed-out' };
const CHANNEL = 'gatehouse:tabs';
const channel = typeof BroadcastChannel === 'undefined' ? null : new BroadcastChannel(CHANNEL);

function tell(news: TabNews): void {
	if (channel) {
		channel.postMessage(news);
		return;
	}
	try {
		// A storage event reaches the other tabs; nothing stays behind.
		localStorage.setItem(CHANNEL, JSON.stringify({ type: news.type, at: Date.now() }));
		localStorage.removeItem(CHANNEL);
	} catch {
		// storage blocked: other tabs learn at their next request
	}
}

function heard(news: TabNews): void {
	if (session.status !== 'signed-in') return;
	if (news.type === 'signed-out') {
		signedOut('You logged out in another tab.', false, { tell: false, keepHint: true });
	} else if (news.username === undefined || news.username !== session.profile?.username) {
		signedOut(SWITCHED, false, { tell: false, keepHint: true });
	}
}

if (channel) {
	channel.onmessage = (event: MessageEvent<TabNews>) => heard(event.data);
} else if (typeof window !== 'undefined') {
	window.addEventListener('storage', (event) => {
		if (event.key !== CHANNEL || !event.newValue) return;
		try {
			heard(JSON.parse(event.newValue) as TabNews);
		} catch {
			// not ours
		}
	});
}

/** On load: a reload keeps the user signed in through the HttpOnly refresh cookie. */
export function restore(): Promise<void> {
	restoring ??= (async () => {
		try {
			if (hinted()) {
				if (await renew()) {
					await loadProfile();
					return;
				}
				hint(false); // the session is over
			}
		} catch (error) {
			// The API could not answer (an outage, the rate limit): show the visitor as logged out
			// for now, say why (the login page shows it), and keep the flag so that the next load
			// tries again.
			if (!(error instanceof ApiError)) throw error;
			session.failure = problem(error);
		}
		if (session.status === 'unknown') {
			session.status = 'anonymous';
		}
	})();
	return restoring;
}

export async function loadProfile(): Promise<void> {
	const { data } = await send<Profile>('GET', '/auth/user');
	session.profile = data;
	session.status = 'signed-in';
	startLive();
}

// Sessions ended elsewhere end here at once, rather than at this tab's next request (which the
// authorizer's cache could even let through for a while). "all" also follows a password change,
// which gives the tab that made it (and the other tabs of its browser, through the shared
// cookie) a new session: one refresh tells the two apart.
let ownRevocations = 0;

/**
 * Runs a request of this tab that revokes sessions (a password change, a logout): events it
 * causes that arrive before its answer are this tab's own doing, not news from elsewhere.
 */
export async function revokingHere<T>(task: () => Promise<T>): Promise<T> {
	ownRevocations += 1;
	try {
		return await task();
	} finally {
		ownRevocations -= 1;
	}
}

subscribe(['session.revoked', 'account.deleted'], (event) => void endedElsewhere(event));

async function endedElsewhere(event: LiveEvent): Promise<void> {
	if (session.status !== 'signed-in' || ownRevocations > 0) return;
	if (event.type === 'account.deleted') {
		signedOut(DELETED, false, { tell: false });
		return;
	}
	const { sessionId } = event.data as SessionRevoked;
	if (sessionId !== 'all' && sessionId !== currentSession()) return;
	try {
		if (await renew()) return; // this browser holds a newer session
	} catch (error) {
		// The API could not say whether the session lives on: end it here all the same (the
		// revocation is real), and keep the flag so that a reload can restore it if it does.
		if (!(error instanceof ApiError)) throw error;
		if (session.status === 'signed-in') {
			signedOut(ELSEWHERE, false, { tell: false, keepHint: true });
		}
		return;
	}
	if (session.status === 'signed-in') signedOut(ELSEWHERE, false, { tell: false });
}

/** With an address, the API mails a link to confirm it. */
export async function signup(username: string, password: string, email = ''): Promise<string> {
	const { data } = await send<Message>('POST', '/auth/signup', {
		auth: false,
		body: email ? { username, password, email } : { username, password }
	});
	return data.message;
}

/**
 * The password step. Resolves null when signed in, or with the challenge to send with a code
 * (codeStep) when the account has two-factor authentication on.
 */
export async function login(username: string, password: string): Promise<string | null> {
	const { data } = await send<LoginAnswer>('POST', '/auth/login', {
		auth: false,
		body: { username, password }
	});
	if ('mfaRequired' in data) {
		return data.challenge;
	}
	signedIn(data);
	await loadProfile();
	return null;
}

/** The code step: a code from the authenticator app or a recovery code. */
export async function codeStep(challenge: string, code: string): Promise<void> {
	signedIn(await loginWithCode(challenge, code));
	await loadProfile();
}

/** A password change starts a new session (the API sets its cookie) and ends the others. */
export function signedIn(data: SignedIn): void {
	setAccessToken(data.token, data.username, data.sessionId);
	hint(true);
	session.notice = '';
	session.failure = null;
	session.deliberate = false;
	tell({ type: 'signed-in', username: data.username });
}

export async function logout(): Promise<void> {
	try {
		await revokingHere(() => send<Message>('POST', '/auth/logout'));
	} finally {
		signedOut('You are logged out.');
	}
}

export async function logoutEverywhere(): Promise<void> {
	await revokingHere(() => send<Message>('POST', '/auth/logout-all'));
	signedOut('You are logged out on every device.');
}

export function signedOut(
	notice: string,
	deliberate = true,
	{ tell: telling = true, keepHint = false } = {}
): void {
	setAccessToken(null);
	stopLive();
	if (!keepHint) hint(false);
	if (telling) tell({ type: 'signed-out' });
	session.failure = null;
	session.profile = null;
	session.status = 'anonymous';
	session.notice = notice;
	session.deliberate = deliberate;
}

/**
 * `next` from a query string, if it is a path on this site (never another origin). Judged on
 * what the browser makes of it, and of its percent-decoded forms: `/.//host`, `/x/..%5C/host`,
 * `/%2F/host` or a tab inside `//` all end up protocol-relative once normalised.
 */
export function safeNext(raw: string | null, fallback = '/dashboard'): string {
	if (!raw || !raw.startsWith('/')) return fallback;
	const origin = window.location.origin;
	let form = raw;
	try {
		for (let depth = 0; ; depth += 1) {
			if (depth === 4) return fallback; // encoded over and over: not a link of ours
			if (/[\\\u0000-\u001f\u007f]/.test(form) || form.startsWith('//')) return fallback;
			const url = new URL(form, origin);
			if (url.origin !== origin || /^\/[/\\]/.test(url.pathname)) return fallback;
			const decoded = decodeURIComponent(form);
			if (decoded === form) break;
			form = decoded;
		}
		const url = new URL(raw, origin);
		if (url.pathname.startsWith('/api/') || ['/login', '/signup'].includes(url.pathname)) {
			return fallback;
		}
		return url.pathname + url.search + url.hash;
	} catch {
		return fallback; // malformed percent-encoding
	}
}
