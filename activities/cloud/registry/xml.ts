/**
 * Just enough XML for XML-RPC and OpenNebula's object documents: elements, text, CDATA and the
 * predefined and numeric entities. No DTDs, no external entities (nothing to expand or fetch), no
 * namespaces: what a registry sends is data, not a document to interpret.
 */

export interface XmlElement {
  name: string;
  children: XmlElement[];
  text: string;
}

export class XmlError extends Error {
  override readonly name = 'XmlError';
}

const ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

function decodeEntities(raw: string): string {
  return raw.replace(/&(#x[0-9a-fA-F]+|#\d+|[a-z]+);/g, (whole, entity: string) => {
    if (entity.startsWith('#x')) return String.fromCodePoint(parseInt(entity.slice(2), 16));
    if (entity.startsWith('#')) return String.fromCodePoint(parseInt(entity.slice(1), 10));
    const named = ENTITIES[entity];
    if (named === undefined) throw new XmlError(`unknown entity ${whole}`);
    return named;
  });
}

export function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Parses a document into its root element. Attributes are read past and dropped. */
export function parseXml(source: string): XmlElement {
  const stack: XmlElement[] = [{ name: '#document', children: [], text: '' }];
  let i = 0;
  while (i < source.length) {
    const lt = source.indexOf('<', i);
    const top = stack[stack.length - 1]!;
    if (lt < 0) {
      top.text += decodeEntities(source.slice(i));
      break;
    }
    if (lt > i) top.text += decodeEntities(source.slice(i, lt));
    if (source.startsWith('<![CDATA[', lt)) {
      const end = source.indexOf(']]>', lt);
      if (end < 0) throw new XmlError('unterminated CDATA');
      top.text += source.slice(lt + 9, end);
      i = end + 3;
    } else if (source.startsWith('<!--', lt)) {
      const end = source.indexOf('-->', lt);
      if (end < 0) throw new XmlError('unterminated comment');
      i = end + 3;
    } else if (source.startsWith('<?', lt)) {
      const end = source.indexOf('?>', lt);
      if (end < 0) throw new XmlError('unterminated declaration');
      i = end + 2;
    } else if (source.startsWith('<!', lt)) {
      throw new XmlError('DOCTYPE and other declarations are not accepted');
    } else {
      const end = source.indexOf('>', lt);
      if (end < 0) throw new XmlError('unterminated tag');
      const tag = source.slice(lt + 1, end);
      i = end + 1;
      if (tag.startsWith('/')) {
        const name = tag.slice(1).trim();
        const open = stack.pop();
        if (!open || open.name !== name || stack.length === 0) throw new XmlError(`unexpected </${name}>`);
      } else {
        const selfClosing = tag.endsWith('/');
        const name = (selfClosing ? tag.slice(0, -1) : tag).trim().split(/\s+/)[0] ?? '';
        if (!/^[A-Za-z_][\w.:-]*$/.test(name)) throw new XmlError(`bad tag <${tag}>`);
        const element: XmlElement = { name, children: [], text: '' };
        top.children.push(element);
        if (!selfClosing) stack.push(element);
      }
    }
  }
  if (stack.length !== 1) throw new XmlError(`unclosed <${stack[stack.length - 1]!.name}>`);
  const root = stack[0]!.children;
  if (root.length !== 1) throw new XmlError('expected exactly one root element');
  return root[0]!;
}

export function child(element: XmlElement, name: string): XmlElement | undefined {
  return element.children.find((c) => c.name === name);
}

export function childText(element: XmlElement, name: string): string | undefined {
  return child(element, name)?.text;
}

export function children(element: XmlElement, name: string): XmlElement[] {
  return element.children.filter((c) => c.name === name);
}
