/**
 * Where the data lake's files go: a local folder, or an S3-compatible object store (AWS S3, MinIO, Ceph, R2, ...).
 * Both write an object whole or not at all: the folder through a temporary name, fsync and rename; S3 because a PUT
 * is atomic. The exporter writes each day's manifest last and asks for it to know a day is done.
 */
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, renameSync, writeSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { HeadObjectCommand, PutObjectCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3';

export interface LakeTarget {
  /** Where a key lives, for people (a path or an s3:// URL). */
  locate(key: string): string;
  exists(key: string): Promise<boolean>;
  put(key: string, data: Uint8Array, contentType: string): Promise<void>;
}

export class FolderTarget implements LakeTarget {
  readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
  }

  locate(key: string): string {
    return join(this.root, key);
  }

  async exists(key: string): Promise<boolean> {
    return existsSync(this.locate(key));
  }

  /** Temporary name, fsync, rename, fsync of the folder: the file is whole or absent. */
  async put(key: string, data: Uint8Array): Promise<void> {
    const path = this.locate(key);
    mkdirSync(dirname(path), { recursive: true });
    const temporary = `${path}.tmp-${process.pid}`;
    const fd = openSync(temporary, 'w');
    try {
      let offset = 0;
      while (offset < data.byteLength) offset += writeSync(fd, data, offset);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, path);
    const dir = openSync(dirname(path), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
  }
}

export interface S3TargetOptions {
  bucket: string;
  /** Key prefix, without leading or trailing slash ('' for the bucket's root). */
  prefix: string;
  /** S3-compatible endpoint (MinIO and the like); unset: AWS. */
  endpoint?: string | undefined;
  region: string;
  /** Path-style URLs (http://host/bucket/key), which most S3-compatible servers need. */
  forcePathStyle: boolean;
}

export class S3Target implements LakeTarget {
  private readonly client: S3Client;

  /** Credentials come from the AWS SDK's usual chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profiles, roles). */
  constructor(private readonly options: S3TargetOptions) {
    this.client = new S3Client({ region: options.region, forcePathStyle: options.forcePathStyle, ...(options.endpoint ? { endpoint: options.endpoint } : {}) });
  }

  private key(key: string): string {
    return this.options.prefix ? `${this.options.prefix}/${key}` : key;
  }

  locate(key: string): string {
    return `s3://${this.options.bucket}/${this.key(key)}`;
  }

  async exists(key: string): Promise<boolean> {
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.options.bucket, Key: this.key(key) }));
      return true;
    } catch (error) {
      if (error instanceof S3ServiceException && (error.$metadata.httpStatusCode === 404 || error.name === 'NotFound')) return false;
      throw error;
    }
  }

  async put(key: string, data: Uint8Array, contentType: string): Promise<void> {
    await this.client.send(new PutObjectCommand({ Bucket: this.options.bucket, Key: this.key(key), Body: data, ContentType: contentType }));
  }

  close(): void {
    this.client.destroy();
  }
}

/**
 * `s3://bucket/prefix` (endpoint from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, region from AWS_REGION, path-style
 * unless LAKE_S3_VIRTUAL_HOSTED=true when an endpoint is set) or a folder path.
 */
export function lakeTarget(to: string, env: NodeJS.ProcessEnv = process.env): LakeTarget {
  const s3 = /^s3:\/\/([^/]+)\/?(.*)$/.exec(to);
  if (!s3) return new FolderTarget(to);
  const endpoint = env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL;
  return new S3Target({
    bucket: s3[1]!,
    prefix: s3[2]!.replace(/\/+$/, ''),
    endpoint,
    region: env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1',
    forcePathStyle: endpoint !== undefined && env.LAKE_S3_VIRTUAL_HOSTED !== 'true',
  });
}
