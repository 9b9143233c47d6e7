// Who is signed in, shared by every page. The credentials themselves stay inside api.ts.

import { ApiError, onSessionEnded, renew, send, setAccessToken } from './api';
import type { Message, Profile, SignedIn } from './types';

export type Status = 'unknown' | 'anonymous' | 'signed-in';

class SessionState {
	status: Status = $state('unknown');
	profile: Profile | null = $state(null);
	/** A message for the login page, e.g. why the session ended. */
	notice: string = $state('');
	/** The user ended the session (logged out): no reason to come back to the page after login. */
	deliberate = $state(false);
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

onSessionEnded(() => {
	signedOut('Your session has ended; please log in again.', false);
});

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
			// for now, and keep the flag so that the next load tries again.
			if (!(error instanceof ApiError)) throw error;
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
}

export async function signup(username: string, password: string): Promise<string> {
	const { data } = await send<{ message: string }>('POST', '/auth/signup', {
		auth: false,
		body: { username, password }
	});
	return data.message;
}

export async function login(username: string, password: string): Promise<void> {
	const { data } = await send<SignedIn>('POST', '/auth/login', {
		auth: false,
		body: { username, password }
	});
	signedIn(data);
	await loadProfile();
}

/** A password change starts a new session (the API sets its cookie) and ends the others. */
export function signedIn(data: SignedIn): void {
	setAccessToken(data.token);
	hint(true);
	session.notice = '';
	session.deliberate = false;
}

export async function logout(): Promise<void> {
	try {
		await send<Message>('POST', '/auth/logout');
	} finally {
		signedOut('You are logged out.');
	}
}

export async function logoutEverywhere(): Promise<void> {
	await send<Message>('POST', '/auth/logout-all');
	signedOut('You are logged out on every device.');
}

export function signedOut(notice: string, deliberate = true): void {
	setAccessToken(null);
	hint(false);
	session.profile = null;
	session.status = 'anonymous';
	session.notice = notice;
	session.deliberate = deliberate;
}

/** `next` from a query string, if it is a path on this site (never another origin). */
export function safeNext(raw: string | null, fallback = '/dashboard'): string {
	if (!raw || !raw.startsWith('/') || raw.startsWith('//') || raw.startsWith('/\\')) {
		return fallback;
	}
	try {
		const url = new URL(raw, window.location.origin);
		if (url.origin !== window.location.origin || url.pathname.startsWith('/api/')) {
			return fallback;
		}
		if (url.pathname === '/login' || url.pathname === '/signup') {
			return fallback;
		}
		return url.pathname + url.search + url.hash;
	} catch {
		return fallback;
	}
}
