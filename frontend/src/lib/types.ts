// The API's shapes, under the names the pages use: every one is a schema of the OpenAPI document
// the API serves (openapi.json), turned into TypeScript by openapi-typescript (api-schema.d.ts).
// `make api-types` regenerates both; a test fails when they are out of date.
import type { components } from './api-schema';

type Schemas = components['schemas'];

export type Role = Schemas['Profile']['role'];
export type ItemStatus = Schemas['ItemView']['status'];
export const ITEM_STATUSES: readonly ItemStatus[] = ['active', 'pending', 'archived'];

export type ErrorBody = Schemas['Error'];
export type FieldError = NonNullable<ErrorBody['errors']>[number];
export type Message = Schemas['Message'];
export type SignedIn = Schemas['SignedIn'];
export type Profile = Schemas['Profile'];

export type Item = Schemas['ItemView'];
export type ItemList = Schemas['ItemList'];

export type Upload = Schemas['UploadView'];
export type UploadKind = Upload['kind'];
export type UploadList = Schemas['UploadList'];
export type UploadStarted = Schemas['UploadStarted'];

export type Session = Schemas['SessionView'];
export type SessionList = Schemas['SessionList'];
export type SecurityEvent = Schemas['EventView'];
export type EventList = Schemas['EventList'];

export type AdminUser = Schemas['AdminUser'];
export type UserList = Schemas['UserList'];

export type EmailChanged = Schemas['EmailSet'];
export type EmailVerified = Schemas['EmailVerified'];

export type LoginAnswer = Schemas['LoginAnswer'];
export type MfaRequired = Schemas['MfaRequired'];
export type TotpEnrolment = Schemas['MfaEnrolment'];
export type TotpEnabled = Schemas['MfaEnabled'];

// Live updates (the Events issue).

/** POST /auth/ws-ticket: where to open the WebSocket, the one-time ticket in the URL. */
export type WsTicket = Schemas['WsTicket'];

// The messages pushed over the WebSocket are not in the OpenAPI document (docs/EVENTS.md
// describes them): their shapes are written here.

/** One message pushed over the WebSocket: an event of the signed-in account. */
export interface LiveEvent<T = unknown> {
	/** `item.created`, `session.revoked`, `security.login`, ... */
	type: string;
	version: number;
	/** Unique per event: a message delivered twice carries the same id. */
	id: string;
	time: string;
	data: T;
}

/** The data of `session.revoked`: one session, or every session of the account. */
export interface SessionRevoked {
	sessionId: string;
}
