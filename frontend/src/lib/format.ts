const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

export function when(iso: string): string {
	const date = new Date(iso);
	return Number.isNaN(date.getTime()) ? iso : dateTime.format(date);
}

export function bytes(size: number): string {
	if (size < 1024) return `${size} B`;
	if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`;
	return `${(size / 1024 / 1024).toFixed(1)} MiB`;
}

/** "Chrome 156 on Linux" from a User-Agent header, or the header itself. */
export function browserName(userAgent: string): string {
	const browser =
		/(Edg|Firefox|OPR|HeadlessChrome|Chrome|Version)\/(\d+)/.exec(userAgent) ?? undefined;
	const system = /Windows|Android|iPhone|iPad|Mac OS X|CrOS|Linux/.exec(userAgent)?.[0];
	if (!browser || !system) return userAgent || 'Unknown browser';
	const names: Record<string, string> = {
		Edg: 'Edge',
		OPR: 'Opera',
		HeadlessChrome: 'Headless Chrome',
		Version: 'Safari'
	};
	const systems: Record<string, string> = { 'Mac OS X': 'macOS', CrOS: 'ChromeOS' };
	return `${names[browser[1] ?? ''] ?? browser[1]} ${browser[2]} on ${systems[system] ?? system}`;
}
