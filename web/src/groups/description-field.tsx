/** A group's description as the create and rename forms ask for it (the server takes 500 characters). */
export function DescriptionField({
  id,
  value,
  onChange,
}: {
  id: string;
  value: string;
  onChange: (value: string) => void;
}) {
  return (
    <>
      <label htmlFor={id}>Description</label>
      <input
        id={id}
        value={value}
        maxLength={500}
        placeholder="optional"
        onChange={(e) => onChange(e.target.value)}
      />
    </>
  );
}
