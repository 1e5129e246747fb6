/**
 * Words of a command printed for an admin to copy into a shell: by the admin CLI (its `Next:` lines)
 * and by the API (`groups.nextSteps`' hint), so both quote alike and each runs as printed.
 */

/** `text` as a shell reads it back, for a hint to copy: as is when it is plain, else single-quoted. */
export function shellWord(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", "'\\''")}'`;
}

/**
 * A group as one word of a command to copy: its name quoted for the shell (`"a$b"` expanded `$b`),
 * or its id when the name starts with `-`, which the command would read as an option.
 */
export function groupWord(group: { name: string; id: string }): string {
  return group.name.startsWith('-') ? group.id : shellWord(group.name);
}

/**
 * How to enroll a group's first connector; `flags` (e.g. ` --server URL`) follow `groups key GROUP`.
 * @default flags ''
 */
export function deployHint(group: { name: string; id: string }, flags = ''): string {
  return `Copy the key (npm run -s server -- groups key ${groupWord(group)}${flags}) and run: connector-agent --server URL --key-file FILE`;
}
