/**
 * XML-RPC encoding and decoding (the subset OpenNebula uses: string, int, boolean, double, array,
 * struct), shared by the OpenNebula client and the test double that stands in for OpenNebula.
 */
import { child, children, escapeXml, parseXml, XmlError, type XmlElement } from './xml.js';

export type XmlRpcValue = string | number | boolean | XmlRpcValue[] | { [key: string]: XmlRpcValue };

export function encodeValue(value: XmlRpcValue): string {
  if (typeof value === 'string') return `<value><string>${escapeXml(value)}</string></value>`;
  if (typeof value === 'boolean') return `<value><boolean>${value ? 1 : 0}</boolean></value>`;
  if (typeof value === 'number') {
    return Number.isInteger(value) ? `<value><i4>${value}</i4></value>` : `<value><double>${value}</double></value>`;
  }
  if (Array.isArray(value)) return `<value><array><data>${value.map(encodeValue).join('')}</data></array></value>`;
  const members = Object.entries(value).map(
    ([name, v]) => `<member><name>${escapeXml(name)}</name>${encodeValue(v)}</member>`,
  );
  return `<value><struct>${members.join('')}</struct></value>`;
}

export function decodeValue(value: XmlElement): XmlRpcValue {
  const typed = value.children[0];
  if (!typed) return value.text; // an untyped value is a string
  switch (typed.name) {
    case 'string':
      return typed.text;
    case 'i4':
    case 'int':
    case 'i8':
      return parseInt(typed.text, 10);
    case 'double':
      return parseFloat(typed.text);
    case 'boolean':
      return typed.text.trim() === '1';
    case 'array':
      return children(child(typed, 'data') ?? typed, 'value').map(decodeValue);
    case 'struct': {
      const out: Record<string, XmlRpcValue> = {};
      for (const member of children(typed, 'member')) {
        const v = child(member, 'value');
        if (v) out[child(member, 'name')?.text ?? ''] = decodeValue(v);
      }
      return out;
    }
    default:
      throw new XmlError(`unsupported XML-RPC type <${typed.name}>`);
  }
}

export function encodeCall(method: string, params: readonly XmlRpcValue[]): string {
  const body = params.map((p) => `<param>${encodeValue(p)}</param>`).join('');
  return `<?xml version="1.0"?><methodCall><methodName>${escapeXml(method)}</methodName><params>${body}</params></methodCall>`;
}

export function decodeCall(xml: string): { method: string; params: XmlRpcValue[] } {
  const root = parseXml(xml);
  if (root.name !== 'methodCall') throw new XmlError(`expected <methodCall>, got <${root.name}>`);
  const method = child(root, 'methodName')?.text.trim() ?? '';
  const params = children(child(root, 'params') ?? root, 'param').map((p) => decodeValue(child(p, 'value') ?? p));
  return { method, params };
}

export function encodeResponse(value: XmlRpcValue): string {
  return `<?xml version="1.0"?><methodResponse><params><param>${encodeValue(value)}</param></params></methodResponse>`;
}

export function encodeFault(code: number, message: string): string {
  return `<?xml version="1.0"?><methodResponse><fault>${encodeValue({ faultCode: code, faultString: message })}</fault></methodResponse>`;
}

export type XmlRpcResult = { ok: true; value: XmlRpcValue } | { ok: false; code: number; message: string };

export function decodeResponse(xml: string): XmlRpcResult {
  const root = parseXml(xml);
  if (root.name !== 'methodResponse') throw new XmlError(`expected <methodResponse>, got <${root.name}>`);
  const fault = child(root, 'fault');
  if (fault) {
    const detail = decodeValue(child(fault, 'value') ?? fault) as Record<string, XmlRpcValue>;
    return { ok: false, code: Number(detail.faultCode), message: String(detail.faultString) };
  }
  const value = child(child(child(root, 'params') ?? root, 'param') ?? root, 'value');
  if (!value) throw new XmlError('a response without a value');
  return { ok: true, value: decodeValue(value) };
}
