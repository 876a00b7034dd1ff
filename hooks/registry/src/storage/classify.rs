//! What an S3 answer means, by behaviour rather than one vendor's error codes: AWS
//! answers bad credentials with `InvalidAccessKeyId` / `SignatureDoesNotMatch`, Garage
//! with `403 AccessDenied`; both name the region they expect when the signature's
//! region is wrong (`AuthorizationHeaderMalformed`, a `<Region>` element, or an
//! `x-amz-bucket-region` header on a redirect).

use super::{Failure, Kind};

/// One step of the check, for messages and the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `GET /` (ListBuckets): proves the credentials, whatever the bucket.
    ListBuckets,
    /// `GET /<bucket>?list-type=2&max-keys=1`: the bucket exists and may be listed.
    ListObjects,
    /// `PUT` of the probe object under the root directory.
    PutObject,
    /// `GET` of the probe object, compared with what was written.
    GetObject,
    /// `DELETE` of the probe object.
    DeleteObject,
}

impl Step {
    /// The step's stable name (`list-buckets`, `list-objects`, `put-object`,
    /// `get-object`, `delete-object`).
    pub const fn name(self) -> &'static str {
        match self {
            Step::ListBuckets => "list-buckets",
            Step::ListObjects => "list-objects",
            Step::PutObject => "put-object",
            Step::GetObject => "get-object",
            Step::DeleteObject => "delete-object",
        }
    }

    /// What the key must be allowed to do for this step.
    const fn right(self) -> &'static str {
        match self {
            Step::ListBuckets | Step::ListObjects | Step::GetObject => "read",
            Step::PutObject => "write",
            Step::DeleteObject => "delete (write)",
        }
    }
}

/// An S3 error document's `<Code>`, if the body is one (`<Error>…<Code>X</Code>`).
pub fn error_code(body: &str) -> Option<&str> {
    if !body.contains("<Error") {
        return None;
    }
    tag(body, "Code").filter(|c| !c.is_empty())
}

/// AWS's codes for an unknown key or a wrong secret (other servers, Garage among
/// them, answer `AccessDenied`: see [`answer`]).
pub fn is_credentials_code(code: &str) -> bool {
    matches!(
        code,
        "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "InvalidToken" | "ExpiredToken"
    )
}

/// The text of the first `<name>…</name>` element, trimmed; a bounded search in a
/// capped body (no XML parser for two fields).
pub fn tag<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = body.find(&open)? + open.len();
    let len = body[start..].find(&close)?;
    Some(body[start..start + len].trim())
}

/// A region name taken from a server's answer, kept only when it looks like one (it
/// goes into a message).
fn plausible_region(r: &str) -> Option<&str> {
    (!r.is_empty()
        && r.len() <= 64
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then_some(r)
}

/// What the server said about the region, if anything: `Some(expected)` (the region it
/// wants, when it names one) when the signature's region is the problem.
fn region_problem(
    status: u16,
    code: Option<&str>,
    body: &str,
    header_region: Option<&str>,
    region: &str,
) -> Option<Option<String>> {
    if let Some(r) = header_region.and_then(plausible_region) {
        if r != region {
            return Some(Some(r.to_string()));
        }
    }
    let named = tag(body, "Region")
        .and_then(plausible_region)
        .filter(|r| *r != region)
        .map(str::to_owned);
    let by_code = matches!(
        code,
        Some("AuthorizationHeaderMalformed" | "AuthorizationQueryParametersError")
    );
    let moved = status == 301 && code == Some("PermanentRedirect");
    if by_code || moved || named.is_some() {
        return Some(named);
    }
    None
}

/// Classifies a non-success answer (`status` not 2xx, or a 2xx whose body is not what
/// S3 answers). `credentials_proven`: an earlier step showed the server accepts the
/// key, so a `403` is about rights, not credentials.
#[allow(clippy::too_many_arguments)]
pub fn answer(
    step: Step,
    status: u16,
    body: &str,
    header_region: Option<&str>,
    spec_region: &str,
    bucket: &str,
    url: &str,
    credentials_proven: bool,
) -> Failure {
    let code = error_code(body);
    if let Some(expected) = region_problem(status, code, body, header_region, spec_region) {
        let fix = match expected {
            Some(r) => format!("the server expects region {r:?}: set s3.region: {r}"),
            None => "set s3.region to the region the S3 server is configured with (Garage: s3_region in garage.toml)".to_string(),
        };
        return Failure::new(
            Kind::WrongRegion,
            format!(
                "{url}: the S3 server refused the signature's region {spec_region:?} (HTTP {status}{}); {fix}",
                code.map(|c| format!(" {c}")).unwrap_or_default()
            ),
        );
    }
    let Some(code) = code else {
        return Failure::new(
            Kind::NotS3,
            format!(
                "{url}: {} answered HTTP {status} without an S3 error document: this is not an S3 API; check s3.endpoint (scheme, host and the S3 API port, e.g. Garage's 3900)",
                step.name()
            ),
        );
    };
    let bucket_step = step != Step::ListBuckets;
    if code == "NoSuchBucket" || (bucket_step && status == 404 && step == Step::ListObjects) {
        return Failure::new(
            Kind::NoBucket,
            format!("{url}: the bucket {bucket:?} does not exist (HTTP {status} {code}); create it or correct s3.bucket"),
        );
    }
    let credentials_code = is_credentials_code(code);
    if status == 403 || credentials_code {
        if credentials_code || !credentials_proven {
            return Failure::new(
                Kind::BadCredentials,
                format!("{url}: the S3 server refused the credentials (HTTP {status} {code}); check s3.accessKey and s3.secretKey"),
            );
        }
        return Failure::new(
            Kind::Denied,
            format!(
                "{url}: {} denied (HTTP {status} {code}): the key is valid but may not {} in bucket {bucket:?}; grant it read and write on the bucket (Garage: garage bucket allow --read --write {bucket} --key <key>)",
                step.name(),
                step.right()
            ),
        );
    }
    Failure::new(
        Kind::Http,
        format!("{url}: {} answered HTTP {status} {code}", step.name()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(step: Step, status: u16, body: &str, header: Option<&str>, proven: bool) -> Kind {
        answer(
            step,
            status,
            body,
            header,
            "garage",
            "b",
            "http://s/",
            proven,
        )
        .kind
    }

    #[test]
    fn the_vendors_answers_classify_by_behaviour() {
        let err = |code: &str| {
            format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>")
        };
        // Garage: bad key and bad secret are both 403 AccessDenied.
        assert_eq!(
            kind(Step::ListBuckets, 403, &err("AccessDenied"), None, false),
            Kind::BadCredentials
        );
        // AWS codes are credentials whatever the step.
        assert_eq!(
            kind(
                Step::PutObject,
                403,
                &err("SignatureDoesNotMatch"),
                None,
                true
            ),
            Kind::BadCredentials
        );
        assert_eq!(
            kind(
                Step::ListBuckets,
                403,
                &err("InvalidAccessKeyId"),
                None,
                false
            ),
            Kind::BadCredentials
        );
        // Credentials proven: a 403 is about rights.
        assert_eq!(
            kind(Step::PutObject, 403, &err("AccessDenied"), None, true),
            Kind::Denied
        );
        assert_eq!(
            kind(Step::ListObjects, 404, &err("NoSuchBucket"), None, true),
            Kind::NoBucket
        );
        assert_eq!(
            kind(
                Step::ListBuckets,
                400,
                &err("AuthorizationHeaderMalformed"),
                None,
                false
            ),
            Kind::WrongRegion
        );
        let aws =
            "<Error><Code>AuthorizationHeaderMalformed</Code><Region>eu-west-1</Region></Error>";
        let f = answer(Step::ListBuckets, 400, aws, None, "garage", "b", "u", false);
        assert!(f.message.contains("s3.region: eu-west-1"), "{}", f.message);
        assert_eq!(
            kind(Step::ListObjects, 301, "", Some("us-east-2"), true),
            Kind::WrongRegion
        );
        // Not S3: an HTML page, a JSON error, an empty 404.
        assert_eq!(
            kind(Step::ListBuckets, 200, "<html>hello</html>", None, false),
            Kind::NotS3
        );
        assert_eq!(kind(Step::ListBuckets, 404, "", None, false), Kind::NotS3);
        assert_eq!(
            kind(Step::ListBuckets, 401, "{\"errors\":[]}", None, false),
            Kind::NotS3
        );
        assert_eq!(
            kind(Step::GetObject, 500, &err("InternalError"), None, true),
            Kind::Http
        );
    }

    #[test]
    fn a_region_the_server_names_is_shown_only_when_it_looks_like_one() {
        let body = "<Error><Code>AuthorizationHeaderMalformed</Code><Region>x\ny</Region></Error>";
        let f = answer(
            Step::ListBuckets,
            400,
            body,
            None,
            "garage",
            "b",
            "u",
            false,
        );
        assert_eq!(f.kind, Kind::WrongRegion);
        assert!(!f.message.contains("x\ny"), "{}", f.message);
    }
}
