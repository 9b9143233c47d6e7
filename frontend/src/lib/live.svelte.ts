// Live updates: the signed-in account's events, pushed over a WebSocket.
// - The socket opens with a one-time ticket from POST /auth/ws-ticket (sent through api.ts, so
//   with the bearer token and its renewal); the ticket is the only credential in the URL, and it
//   is single-use and short-lived. A token never goes in a URL.
// - Each message is one event {type, version, id, time, data}; subscribers get the types they
//   asked for, each event once (a message delivered twice carries the same id).
// - A lost connection comes back with a fresh ticket after an exponential, jittered, capped delay;
//   after each reconnection the subscribers resynchronise, since events sent while no socket was
//   open are lost. The first connection opens as the first page loads its data (both start at
//   sign-in), so it does not: a page reloading its list on every sign-in would cost a request
//   for what is, at most, a change made in those few milliseconds.
// - While live updates are unavailable the layout shows a quiet notice; the site works as before.
// - The socket stays open while the tab is hidden: a hidden tab must still hear that its session
//   ended elsewhere.

import { ApiError, send } from './api';
import type { LiveEvent, WsTicket } from './types';

export type LiveState = 'off' | 'connecting' | 'open' | 'unavailable';

class LiveStatus {
	/** off: signed out; unavailable: the last attempt failed, or the API has live updates off. */
	state: LiveState = $state('off');
	/** Why live updates are unavailable, for the notice (empty otherwise). */
	reason: string = $state('');
}

export const live = new LiveStatus();

/** The first retry waits about this long; each failure doubles it, up to MAX_DELAY_MS. */
const BASE_DELAY_MS = 1_000;
const MAX_DELAY_MS = 30_000;
/** Live updates off (the API's 503): asked again far less often; each ask runs a Lambda. */
const OFF_MAX_DELAY_MS = 300_000;
/** A connection open this long was healthy: the next reconnection starts from the first delay. */
const HEALTHY_MS = 10_000;
/** How many event ids to remember for duplicates (redeliveries arrive within moments). */
const REMEMBERED = 500;

const OFF = 'Live updates are off: changes made elsewhere show after a reload.';
const RETRYING = 'Live updates are unavailable; trying again…';

type Handler = (event: LiveEvent) => void;

interface Subscriber {
	/** Event types, or a family such as `security.*`. */
	types: readonly string[];
	handle: Handler;
	resync?: () => void;
}

const subscribers = new Set<Subscriber>();
const seen = new Set<string>();

let running = false;
/** Rises on every start and stop: work begun under an older value is stale. */
let generation = 0;
let socket: WebSocket | null = null;
/** Failed attempts since the last healthy connection: the back-off's exponent. */
let failures = 0;
/** Connections tried since startLive: after the first, an opening resynchronises the pages. */
let attempts = 0;
let retry: ReturnType<typeof setTimeout> | null = null;

/**
 * Calls `handle` with each new event of the given types (`security.*`: every type under
 * `security.`), and `resync` each time the connection comes back after a loss or a failed
 * attempt: what the page loaded may have missed events meanwhile. Returns the unsubscribe
 * function (for onMount).
 */
export function subscribe(
	types: readonly string[],
	handle: Handler,
	resync?: () => void
): () => void {
	const subscriber: Subscriber = { types, handle, resync };
	subscribers.add(subscriber);
	return () => {
		subscribers.delete(subscriber);
	};
}

/** Opens the connection (signed in); does nothing if it is already open or opening. */
export function startLive(): void {
	if (running) return;
	running = true;
	generation += 1;
	failures = 0;
	attempts = 0;
	live.state = 'connecting';
	live.reason = '';
	void connect(generation);
}

/** Closes the connection for good (signed out). */
export function stopLive(): void {
	running = false;
	generation += 1;
	if (retry !== null) clearTimeout(retry);
	retry = null;
	const open = socket;
	socket = null;
	// Closing a socket that is still connecting makes the browser log an error: one that opens
	// later closes itself (onopen below).
	if (open && open.readyState === WebSocket.OPEN) open.close(1000, 'signed out');
	seen.clear();
	live.state = 'off';
	live.reason = '';
}

async function connect(current: number): Promise<void> {
	retry = null;
	attempts += 1;
	if (typeof WebSocket === 'undefined') {
		unavailable(OFF);
		return; // this browser will not have them later either
	}
	let url: string;
	try {
		url = socketUrl((await send<WsTicket>('POST', '/auth/ws-ticket', { optional: true })).data.url);
	} catch (error) {
		if (current !== generation) return;
		if (!(error instanceof ApiError)) throw error;
		// 503: the API has no WebSocket endpoint configured (or could not issue a ticket).
		if (error.status === 503) failed(current, OFF, OFF_MAX_DELAY_MS);
		else failed(current, RETRYING);
		return;
	}
	if (current !== generation) return;
	let opened: WebSocket;
	try {
		opened = new WebSocket(url);
	} catch {
		failed(current, RETRYING);
		return;
	}
	socket = opened;
	let openedAt: number | null = null;
	const reconnection = attempts > 1;
	opened.onopen = () => {
		if (socket !== opened) {
			opened.close(1000, 'no longer needed');
			return;
		}
		openedAt = Date.now();
		live.state = 'open';
		live.reason = '';
		if (reconnection) for (const subscriber of [...subscribers]) subscriber.resync?.();
	};
	opened.onmessage = (message: MessageEvent) => {
		if (socket === opened) receive(message.data);
	};
	opened.onclose = () => {
		if (socket !== opened) return;
		socket = null;
		if (openedAt !== null && Date.now() - openedAt >= HEALTHY_MS) failures = 0;
		if (openedAt !== null && failures === 0) {
			// A connection that was working dropped (a deploy, a network change, the gateway's
			// idle limit): come back quietly; say so only if that fails too.
			live.state = 'connecting';
			schedule(current);
			return;
		}
		failed(current, RETRYING);
	};
}

function failed(current: number, reason: string, cap = MAX_DELAY_MS): void {
	unavailable(reason);
	schedule(current, cap);
}

function unavailable(reason: string): void {
	live.state = 'unavailable';
	live.reason = reason;
}

function schedule(current: number, cap = MAX_DELAY_MS): void {
	if (!running || current !== generation) return;
	// "Equal jitter": between half and all of the capped exponential delay, so tabs that lost
	// their connections together do not all come back at the same moment.
	const ceiling = Math.min(cap, BASE_DELAY_MS * 2 ** failures);
	failures += 1;
	const delay = ceiling / 2 + (Math.random() * ceiling) / 2;
	retry = setTimeout(() => void connect(current), delay);
}

/** Skips the wait when there is reason to think the next attempt will work. */
function retryNow(): void {
	if (!running || retry === null || live.reason === OFF) return;
	if (document.visibilityState !== 'visible') return;
	clearTimeout(retry);
	void connect(generation);
}

if (typeof window !== 'undefined') {
	window.addEventListener('online', retryNow);
	document.addEventListener('visibilitychange', retryNow);
}

/** The ticket URL as a WebSocket URL, also when it is relative or says http(s). */
function socketUrl(url: string): string {
	const resolved = new URL(url, window.location.href);
	if (resolved.protocol === 'http:') resolved.protocol = 'ws:';
	if (resolved.protocol === 'https:') resolved.protocol = 'wss:';
	return resolved.href;
}

function receive(raw: unknown): void {
	if (typeof raw !== 'string') return;
	let event: unknown;
	try {
		event = JSON.parse(raw);
	} catch {
		return; // not an event
	}
	if (!isEvent(event) || seen.has(event.id)) return;
	seen.add(event.id);
	if (seen.size > REMEMBERED) {
		// A Set iterates in insertion order: the oldest id goes first.
		seen.delete(seen.values().next().value as string);
	}
	for (const subscriber of [...subscribers]) {
		if (!subscriber.types.some((type) => matches(type, event.type))) continue;
		try {
			subscriber.handle(event);
		} catch (error) {
			// One page's bug must not keep the event from the others; report it all the same.
			queueMicrotask(() => {
				throw error;
			});
		}
	}
}

function matches(pattern: string, type: string): boolean {
	return pattern.endsWith('.*') ? type.startsWith(pattern.slice(0, -1)) : pattern === type;
}

function isEvent(value: unknown): value is LiveEvent {
	if (typeof value !== 'object' || value === null) return false;
	const record = value as Record<string, unknown>;
	return (
		typeof record.type === 'string' &&
		typeof record.id === 'string' &&
		typeof record.data === 'object' &&
		record.data !== null
	);
}
