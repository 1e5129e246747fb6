// Why a request or a websocket could not reach the server, in one line with the fix: the agent and
// the admin CLI both say it, so they say it the same way.

/** TLS verification failures meaning "this certificate is not signed by a CA the client trusts". */
const UNTRUSTED_CERT_CODES = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
]);

/** The innermost error with a string `code` under `error` (fetch nests it in `cause`, a websocket's ErrorEvent in `error`). */
function innermostCoded(error: unknown): { code: string | null; message: string; coded: object | null } {
  let found: { code?: unknown; message?: unknown } | null = null;
  let deepest: { message?: unknown } | null = null;
  let current: unknown = error;
  for (let depth = 0; depth < 6 && current && typeof current === 'object'; depth++) {
    const candidate = current as { code?: unknown; message?: unknown; cause?: unknown; error?: unknown };
    if (typeof candidate.code === 'string') found = candidate;
    if (typeof candidate.message === 'string' && candidate.message) deepest = candidate;
    current = candidate.cause ?? candidate.error;
  }
  // Without a code, the deepest message says most: fetch's "fetch failed" wraps "bad port".
  const innermost = found ?? deepest ?? (error as { message?: unknown } | null);
  const raw = typeof innermost?.message === 'string' ? innermost.message : String(error);
  // OpenSSL's messages end in a newline and name its source files: one line, without those.
  const message = raw
    .replace(/:\.\.\/deps\/openssl\/\S*/g, '')
    .replace(/\s+/g, ' ')
    .trim();
  return { code: typeof found?.code === 'string' ? found.code : null, message, coded: found };
}

/** What a TLS client sees when the server answers its hello in plain HTTP. */
function isPlainTextAnswer(code: string | null, message: string): boolean {
  return (
    code === 'ERR_SSL_WRONG_VERSION_NUMBER' ||
    code === 'ERR_SSL_PACKET_LENGTH_TOO_LONG' ||
    /wrong version number|packet length too long/i.test(message)
  );
}

/**
 * The names a certificate holds: from the certificate Node attaches to its verdict when it is there
 * (its subjectAltName), else from Node's message: "… is not in the cert's altnames: DNS:a, DNS:b",
 * "… is not in the cert's list: …" (an IP: the list then holds the IP addresses only), or, for a
 * host name against a certificate with no DNS name, "… is not cert's CN: a".
 */
function certificateNames(message: string, coded: object | null): string[] {
  const altNames = (coded as { cert?: { subjectaltname?: unknown } } | null)?.cert?.subjectaltname;
  // Node says "altnames:" twice in the first form: the names follow its own reason, not the prefix.
  const list =
    typeof altNames === 'string' && altNames
      ? altNames
      : (/(?:is not in the cert's altnames|is not in the cert's list|is not cert's CN): (.*)$/.exec(
          message,
        )?.[1] ?? '');
  return list
    .split(',')
    .map((name) => name.trim())
    .filter((name) => !/^(?:email|URI|DirName|othername|Registered ID):/i.test(name))
    .map((name) => name.replace(/^(?:DNS|IP Address):/, ''))
    .filter((name) => name && !name.includes('*'));
}

/** `server` with its host replaced, or its scheme (for a server that speaks plain HTTP). */
function withUrl(server: string, change: { hostname?: string; protocol?: string }): string {
  try {
    const url = new URL(server);
    // An IPv6 address goes in brackets, or the URL keeps its old host.
    if (change.hostname)
      url.hostname = change.hostname.includes(':') ? `[${change.hostname}]` : change.hostname;
    let text = url.href.replace(/\/$/, '');
    if (change.protocol) text = text.replace(/^https:/, change.protocol);
    return text;
  } catch {
    return server;
  }
}

/**
 * A TLS failure that no retry can fix — the certificate is not trusted, is for another name, or
 * the server does not speak TLS at all — as one line with the fix; null for anything else. The
 * agent stops on these with exit 2 instead of retrying for ever.
 */
export function tlsMisconfiguration(
  error: unknown,
  server: string,
  {
    caGiven = false,
    allowInsecureFlag = true,
  }: {
    /** A --ca-file was given: then it is the wrong CA, not a missing flag. */
    caGiven?: boolean;
    /** The program has --allow-insecure (the agent), which plain http:// off loopback needs. */
    allowInsecureFlag?: boolean;
  } = {},
): string | null {
  const { code, message, coded } = innermostCoded(error);
  if (code && UNTRUSTED_CERT_CODES.has(code))
    return caGiven
      ? `TLS: the certificate of ${server} is not trusted (${code}): the --ca-file given did not sign it. ` +
          "Pass the certificate (PEM) of the CA that did, or the server's certificate is from another CA than you think."
      : `TLS: the certificate of ${server} is not trusted (${code}). If a private CA signed it, pass ` +
          "--ca-file with that CA's certificate (PEM); otherwise the server needs a certificate from a public CA.";
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    const names = certificateNames(message, coded);
    const host = (() => {
      try {
        return new URL(server).hostname;
      } catch {
        return server;
      }
    })();
    return (
      `TLS: the certificate of ${server} is not for ${host}` +
      (names.length
        ? ` but for ${names.join(', ')}; use --server ${withUrl(server, { hostname: names[0]! })}`
        : '') +
      ' (a --server host name the certificate names).'
    );
  }
  if (server.startsWith('https:') && isPlainTextAnswer(code, message))
    return (
      `TLS: ${server} answered in plain text, not TLS: it serves http://, not https://. Use ` +
      `--server ${withUrl(server, { protocol: 'http:' })} if that server really is plain HTTP` +
      `${allowInsecureFlag ? ' (off loopback also --allow-insecure)' : ''}, or the URL of its TLS port.`
    );
  return null;
}

/**
 * One line on why a request or websocket could not reach the server. Node hides the useful part
 * (e.g. `SELF_SIGNED_CERT_IN_CHAIN`) a few `cause`s deep behind "fetch failed"; certificate
 * problems also say what to do about them.
 */
export function describeNetworkError(error: unknown): string {
  const { code, message } = innermostCoded(error);
  const detail = code && !message.includes(code) ? `${code}: ${message}` : message;
  if (code && UNTRUSTED_CERT_CODES.has(code))
    return `TLS: the server's certificate is not trusted (${detail}); if a private CA signed it, pass --ca-file with that CA's certificate`;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID')
    return `TLS: the server's certificate is not for this host name (${detail}); use a --server host name the certificate names`;
  if (isPlainTextAnswer(code, message))
    return `TLS: the server did not answer in TLS (${code ?? 'wrong version number'}); it serves plain HTTP: use an http:// URL, or start the server with --tls-cert and --tls-key`;
  if (!code && message === 'bad port')
    return 'bad port: fetch refuses to connect to this port (one of the ports browsers block, such as 6000 or 10080); serve on another port';
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID')
    return `TLS: the server's certificate is outside its validity period (${detail}); check the server's certificate and this host's clock`;
  return detail;
}
