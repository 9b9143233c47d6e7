// The browser's half of an upload: the file goes straight to S3 through the presigned POST the
// API made (a cross-origin request the bucket's CORS rule allows for this site only).

import { ApiError } from './api';
import type { UploadStarted } from './types';

/** An upload that sends nothing for this long has stalled: give up and say so. */
const STALL_MS = 60_000;

export function postToStorage(
	post: UploadStarted['post'],
	file: File,
	onProgress: (fraction: number) => void
): Promise<void> {
	const form = new FormData();
	for (const [name, value] of Object.entries(post.fields)) {
		form.append(name, value);
	}
	// S3 ignores every field after the file.
	form.append('file', file);
	return new Promise((resolve, reject) => {
		// fetch() cannot report upload progress; XMLHttpRequest can.
		const request = new XMLHttpRequest();
		let stalled = false;
		let watchdog: ReturnType<typeof setTimeout> | undefined;
		// A timer rather than request.timeout, which would also cut off a slow but moving upload.
		const watch = (): void => {
			clearTimeout(watchdog);
			watchdog = setTimeout(() => {
				stalled = true;
				request.abort();
			}, STALL_MS);
		};
		const fail = (message: string, status = 0): void => {
			clearTimeout(watchdog);
			reject(new ApiError(status, { message }));
		};
		request.upload.addEventListener('progress', (event) => {
			watch();
			if (event.lengthComputable) onProgress(event.loaded / event.total);
		});
		request.addEventListener('load', () => {
			clearTimeout(watchdog);
			if (request.status >= 200 && request.status < 300) {
				onProgress(1);
				resolve();
			} else {
				fail(storageMessage(request), request.status);
			}
		});
		request.addEventListener('error', () => {
			fail('The upload to storage failed; please try again.');
		});
		request.addEventListener('abort', () => {
			fail(
				stalled
					? 'The upload stalled (nothing sent for a minute); please try again.'
					: 'The upload was cancelled.'
			);
		});
		request.addEventListener('timeout', () => {
			fail('The upload to storage took too long; please try again.');
		});
		request.open('POST', post.url);
		request.send(form);
		watch();
	});
}

function storageMessage(request: XMLHttpRequest): string {
	// S3 explains refusals in XML: <Error><Message>...</Message></Error>. Parsed, so that
	// entities (&amp;, &lt;, ...) read as the characters they stand for.
	let said: string | null | undefined;
	try {
		const xml = new DOMParser().parseFromString(request.responseText ?? '', 'application/xml');
		said = xml.querySelector('Error > Message')?.textContent?.trim();
	} catch {
		said = null;
	}
	return said ? `Storage refused the file: ${said}` : `Storage answered ${request.status}`;
}
