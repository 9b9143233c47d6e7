// The browser's half of an upload: the file goes straight to S3 through the presigned POST the
// API made (a cross-origin request the bucket's CORS rule allows for this site only).

import { ApiError } from './api';
import type { UploadStarted } from './types';

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
		request.upload.addEventListener('progress', (event) => {
			if (event.lengthComputable) onProgress(event.loaded / event.total);
		});
		request.addEventListener('load', () => {
			if (request.status >= 200 && request.status < 300) {
				onProgress(1);
				resolve();
			} else {
				reject(new ApiError(request.status, { message: storageMessage(request) }));
			}
		});
		request.addEventListener('error', () => {
			reject(new ApiError(0, { message: 'The upload to storage failed; please try again.' }));
		});
		request.open('POST', post.url);
		request.send(form);
	});
}

function storageMessage(request: XMLHttpRequest): string {
	// S3 explains refusals in XML: <Error><Message>...</Message></Error>.
	const match = /<Message>([^<]*)<\/Message>/.exec(request.responseText ?? '');
	return match?.[1]
		? `Storage refused the file: ${match[1]}`
		: `Storage answered ${request.status}`;
}
