// Turns the API's OpenAPI document into TypeScript types with openapi-typescript:
// `node scripts/api-types.js IN.json OUT.d.ts` (OUT `-` prints them). `npm run gen:api` and the
// staleness test in tests/test_openapi.py both run this, so they cannot disagree on the options.
import { readFileSync, writeFileSync } from 'node:fs';
import openapiTS, { astToString, COMMENT_HEADER } from 'openapi-typescript';

const [input, output] = process.argv.slice(2);
if (!input || !output) {
	console.error('usage: node scripts/api-types.js OPENAPI.json OUT.d.ts|-');
	process.exit(2);
}
const nodes = await openapiTS(JSON.parse(readFileSync(input, 'utf8')), {
	// A field with a default may be absent: API Gateway's own errors carry only `message`, and a
	// request may leave defaulted fields out.
	defaultNonNullable: false
});
const text = COMMENT_HEADER + astToString(nodes);
if (output === '-') process.stdout.write(text);
else writeFileSync(output, text);
