//! Extension points for work the API server routes but does not do itself: VM actions
//! (KubeVirt's `subresources.kubevirt.io`: start, stop, restart, freeze, unfreeze, guest-exec,
//! console) and disk uploads (CDI's upload proxy). The engines implement these traits and
//! never see HTTP; the API server never sees QEMU or storage.

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde_json::Value;

/// A stream of bytes, for uploads in and consoles out.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

pub trait VmActions: Send + Sync {
    /// `PUT /apis/subresources.kubevirt.io/v1/namespaces/{ns}/{resource}/{name}/{action}` where
    /// resource is `virtualmachines` or `virtualmachineinstances`. The body is the action's
    /// options (may be `{}`); the answer is JSON.
    fn action<'a>(
        &'a self,
        resource: &'a str,
        namespace: &'a str,
        name: &'a str,
        action: &'a str,
        body: Value,
    ) -> BoxFuture<'a, api::Result<Value>>;

    /// `GET .../{resource}/{name}/{action}` for streaming actions (`console`): the serial
    /// console output, followed until the client goes away.
    fn stream<'a>(
        &'a self,
        resource: &'a str,
        namespace: &'a str,
        name: &'a str,
        action: &'a str,
    ) -> BoxFuture<'a, api::Result<ByteStream>>;
}

pub trait Uploads: Send + Sync {
    /// `POST /apis/upload.cdi.kubevirt.io/v1beta1/namespaces/{ns}/datavolumes/{name}/upload`
    /// with the image as the body (raw or qcow2; `content_length` when known). Writes it into
    /// the DataVolume's volume and answers with a summary.
    fn upload<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        content_length: Option<u64>,
        body: ByteStream,
    ) -> BoxFuture<'a, api::Result<Value>>;
}
