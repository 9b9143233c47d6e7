// swagger-ui-dist ships no types; the options this site passes (see the Swagger UI
// configuration reference).
declare module 'swagger-ui-dist/swagger-ui-es-bundle.js' {
	interface SwaggerUIOptions {
		domNode: HTMLElement;
		spec: Record<string, unknown>;
		validatorUrl: string | null;
		deepLinking?: boolean;
		docExpansion?: 'list' | 'full' | 'none';
		defaultModelsExpandDepth?: number;
		tryItOutEnabled?: boolean;
		displayRequestDuration?: boolean;
	}
	const SwaggerUI: (options: SwaggerUIOptions) => unknown;
	export default SwaggerUI;
}
