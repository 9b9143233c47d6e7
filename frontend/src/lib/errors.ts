import { ApiError } from './api';
import type { FieldError } from './types';

export interface Problem {
	message: string;
	errors: FieldError[];
	status: number;
}

/** What to tell the user about a failed call: the server's own message when there is one. */
export function problem(error: unknown): Problem {
	if (error instanceof ApiError) {
		return { message: error.message, errors: error.body.errors ?? [], status: error.status };
	}
	throw error;
}
