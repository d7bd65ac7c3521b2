/**
 * Which kernel and initrd a netboot pack takes from an image, from `unsquashfs -lls` listings as
 * it prints them: the usual symlinks followed (relative, absolute, chained), else the newest
 * boot/vmlinuz-* by version; nothing outside boot/ and no symlink leaving the image.
 */
import { describe, expect, it } from 'vitest';
import { bootFiles } from '../../activities/nas/pack.js';

const entry = (line: string) => {
  const [mode, name, target] = line.split(' ');
  return `${mode} root/root                 7 2026-11-21 08:02 squashfs-root/${name}${target ? ` -> ${target}` : ''}`;
};
const listing = (...lines: string[]) =>
  ['drwxr-xr-x root/root 71 2026-11-21 08:02 squashfs-root', ...lines.map(entry)].join('\n');

describe('kernel and initrd of a netboot pack', () => {
  it('follows /vmlinuz and /initrd.img, relative or absolute, through a chain of links', () => {
    const found = bootFiles(
      listing(
        'drwxr-xr-x boot',
        '-rw-r--r-- boot/vmlinuz-6.1.0-9-amd64',
        '-rw-r--r-- boot/vmlinuz-6.1.0-18-amd64',
        '-rw-r--r-- boot/initrd.img-6.1.0-9-amd64',
        'lrwxrwxrwx boot/vmlinuz vmlinuz-6.1.0-9-amd64',
        'lrwxrwxrwx vmlinuz /boot/vmlinuz',
        'lrwxrwxrwx initrd.img boot/initrd.img-6.1.0-9-amd64',
      ),
    );
    expect(found).toEqual({ kernel: 'boot/vmlinuz-6.1.0-9-amd64', initrd: 'boot/initrd.img-6.1.0-9-amd64' });
  });

  it('takes the newest kernel by version and its own initrd when there are no links', () => {
    const found = bootFiles(
      listing(
        '-rw-r--r-- boot/vmlinuz-6.1.0-9-amd64',
        '-rw-r--r-- boot/vmlinuz-6.1.0-18-amd64',
        '-rw-r--r-- boot/initrd.img-6.1.0-9-amd64',
        '-rw-r--r-- boot/initrd.img-6.1.0-18-amd64',
      ),
    );
    expect(found).toEqual({ kernel: 'boot/vmlinuz-6.1.0-18-amd64', initrd: 'boot/initrd.img-6.1.0-18-amd64' });
  });

  it('finds nothing in a minbase image, and nothing a link points at outside boot/ or the image', () => {
    expect(bootFiles(listing('drwxr-xr-x etc', '-rw-r--r-- etc/shadow'))).toEqual({});
    expect(
      bootFiles(
        listing('-rw-r--r-- etc/shadow', 'lrwxrwxrwx vmlinuz etc/shadow', 'lrwxrwxrwx initrd.img ../../host/initrd'),
      ),
    ).toEqual({});
    expect(bootFiles(listing('lrwxrwxrwx vmlinuz vmlinuz', '-rw-r--r-- boot/initrd.img-6.1.0-18-amd64'))).toEqual({
      initrd: 'boot/initrd.img-6.1.0-18-amd64',
    });
  });
});
