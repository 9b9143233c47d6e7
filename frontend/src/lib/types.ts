// The API's shapes, as docs/API.md describes them.

export type Role = 'user' | 'admin';
export type ItemStatus = 'active' | 'pending' | 'archived';
export const ITEM_STATUSES: readonly ItemStatus[] = ['active', 'pending', 'archived'];

export interface FieldError {
	field: string;
	reason: string;
}

export interface ErrorBody {
	message: string;
	errors?: FieldError[] | null;
	retryAfter?: number | null;
	currentVersion?: number | null;
}

export interface Message {
	message: string;
}

export interface SignedIn {
	message: string;
	token: string;
	username: string;
	expiresIn: number;
	sessionId: string;
}

export interface Profile {
	username: string;
	createdAt: string;
	role: Role;
	updatedAt?: string | null;
}

export interface Item {
	id: string;
	name: string;
	data: Record<string, unknown>;
	status: ItemStatus;
	createdAt: string;
	updatedAt: string;
	version: number;
}

export interface Page {
	nextCursor: string | null;
}

export interface ItemList extends Page {
	items: Item[];
}

export type UploadKind = 'image' | 'document';

export interface Upload {
	id: string;
	kind: UploadKind;
	filename: string;
	contentType: string;
	size: number;
	status: 'pending' | 'ready';
	createdAt: string;
	downloadUrl?: string | null;
}

export interface UploadList extends Page {
	uploads: Upload[];
}

export interface UploadStarted {
	upload: Upload;
	post: { url: string; fields: Record<string, string> };
}

export interface Session {
	id: string;
	createdAt: string;
	lastUsedAt: string;
	expiresAt: string;
	userAgent: string;
	current: boolean;
}

export interface SecurityEvent {
	type: string;
	at: string;
	ip: string;
	userAgent: string;
	details: Record<string, unknown>;
}

export interface EventList extends Page {
	events: SecurityEvent[];
}

export interface AdminUser {
	username: string;
	createdAt: string;
	role: Role;
	updatedAt?: string | null;
	disabled: boolean;
}

export interface UserList extends Page {
	users: AdminUser[];
}

export interface SessionList {
	sessions: Session[];
}
