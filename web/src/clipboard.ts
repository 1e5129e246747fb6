/**
 * Copies text. The clipboard API exists only in a secure context (https, or http on loopback); on
 * plain http elsewhere it falls back to selecting a hidden text area and the copy command.
 */
export async function copyText(text: string): Promise<void> {
  if (window.isSecureContext && navigator.clipboard?.writeText) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.className = 'offscreen';
  document.body.append(area);
  try {
    area.select();
    if (!document.execCommand('copy'))
      throw new Error('the browser refused to copy: select the key and copy it');
  } finally {
    area.remove();
  }
}
