//! Weight transfer to vLLM servers over NCCL (`rollout.sync_method = "nccl"`), the alternative to
//! the shared folder for trainers and servers on GPUs.
//!
//! vLLM's weight-transfer engine (servers started with `VLLM_SERVER_DEV_MODE=1` and
//! `--weight-transfer-config '{"backend": "nccl"}'`; docs/vllm-api-notes.md, "NCCL weight
//! transfer") receives each tensor by an NCCL broadcast from rank 0, the trainer. Each server is
//! its own NCCL group: the trainer (rank 0) and the server's workers (ranks 1..=world size). The
//! trainer mints the group's unique id and hands it over HTTP (`nccl_unique_id_b64`, vLLM's
//! torch-free rendezvous, so aha needs no torch.distributed store); both sides then enter
//! `ncclCommInitRank` together, and the workers run a one-element float32 all-reduce which rank 0
//! must match before its first broadcast. A sync then pauses each server, has it start an update,
//! posts the list of tensors to `/update_weights` (which returns once every tensor has landed)
//! while the trainer broadcasts them in that order, finishes the update, resets the prefix cache
//! and resumes; the probe check of [`super::probe`] follows, as after a folder sync.
//!
//! This module holds the part that needs no GPU (the request bodies, the list of tensors, the
//! [`Broadcaster`] interface the HTTP choreography in `super` drives) and, behind the `nccl` cargo
//! feature, [`NcclBroadcaster`]: NCCL's C API through `cudarc`, loaded at run time.

use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

/// Whether this build can send weights over NCCL (`cargo build -p aha --features nccl`).
pub const BUILT_WITH_NCCL: bool = cfg!(feature = "nccl");

/// Bytes of an `ncclUniqueId` (nccl.h's `NCCL_UNIQUE_ID_BYTES`).
pub const UNIQUE_ID_BYTES: usize = 128;

/// How the servers get the trainer's new weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMethod {
    /// A Hugging Face folder on a filesystem every server reads (`rollout.sync_dir`).
    #[default]
    Disk,
    /// NCCL broadcasts from the trainer's GPU (vLLM only).
    Nccl,
}

/// The weights to send and what the check expects of the servers after.
pub struct WeightsInMemory {
    /// The policy version (optimizer steps taken); vLLM records it as its weight version.
    pub version: u64,
    /// Every weight under its Hugging Face name, in the order they are sent.
    pub tensors: Vec<(String, Tensor)>,
    /// The probe sequence and the trainer's log-probs of its tokens 1.. at temperature 1.
    pub probe_ids: Vec<u32>,
    pub probe_logprobs: Vec<f32>,
}

/// One tensor as `/update_weights` lists it: the server allocates `torch.empty(shape,
/// dtype=getattr(torch, dtype))` and receives the broadcast into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<i64>,
}

/// torch's attribute name of `kind` (`torch.float32`...), for the dtypes NCCL can carry.
pub fn torch_dtype(kind: Kind) -> Option<&'static str> {
    Some(match kind {
        Kind::Float => "float32",
        Kind::Half => "float16",
        Kind::BFloat16 => "bfloat16",
        Kind::Double => "float64",
        Kind::Int8 => "int8",
        Kind::Uint8 => "uint8",
        Kind::Int => "int32",
        Kind::Int64 => "int64",
        _ => return None,
    })
}

/// The list of `tensors`, in their order, as the server is told to expect them.
pub fn manifest(tensors: &[(String, Tensor)]) -> Result<Vec<TensorSpec>, String> {
    tensors
        .iter()
        .map(|(name, tensor)| {
            let kind = tensor.kind();
            let dtype = torch_dtype(kind).ok_or_else(|| format!("{name}: NCCL cannot send {kind:?} tensors"))?;
            Ok(TensorSpec { name: name.clone(), dtype, shape: tensor.size() })
        })
        .collect()
}

/// The body of `POST /init_weight_transfer_engine` for a server of `workers` ranks: they join
/// after the trainer (rank 0), so the group has `1 + workers` ranks.
pub fn init_body(unique_id: &[u8; UNIQUE_ID_BYTES], workers: usize) -> Value {
    json!({"init_info": {
        "nccl_unique_id_b64": base64(unique_id),
        "rank_offset": 1,
        "world_size": 1 + workers,
        // One broadcast per tensor (vLLM's packed mode batches them into fixed-size buffers).
        "packed": false,
    }})
}

/// The body of `POST /update_weights`.
pub fn update_body(manifest: &[TensorSpec]) -> Value {
    json!({"update_info": {
        "names": manifest.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        "dtype_names": manifest.iter().map(|t| t.dtype).collect::<Vec<_>>(),
        "shapes": manifest.iter().map(|t| &t.shape).collect::<Vec<_>>(),
        "packed": false,
    }})
}

/// The body of `POST /finish_weight_update`: the server records `version` as its weight version.
pub fn finish_body(version: u64) -> Value {
    json!({"weight_version": version.to_string()})
}

/// The server's worker count from `GET /get_world_size` (`{"world_size": n}`, n >= 1).
pub fn workers_of(answer: &Value) -> Result<usize, String> {
    match answer.get("world_size").and_then(Value::as_u64) {
        Some(n) if n >= 1 => Ok(n as usize),
        _ => Err(format!("/get_world_size answered {answer} (no world_size >= 1)")),
    }
}

/// Standard base64 (RFC 4648, padded; vLLM rejects the URL-safe alphabet).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An NCCL group the trainer has joined, as its [`Broadcaster`] numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group(pub usize);

/// The trainer's side of the groups: rank 0, which sends. [`NcclBroadcaster`] is the real one;
/// tests drive the HTTP choreography with a stand-in.
pub trait Broadcaster: Send {
    /// A fresh unique id for a new group (NCCL's `ncclGetUniqueId`).
    fn unique_id(&mut self) -> Result<[u8; UNIQUE_ID_BYTES], String>;

    /// Joins the group of `unique_id` as rank 0 of `world_size`, on `device` (where the weights
    /// are), and matches the workers' warm-up all-reduce. Returns once every rank has joined, or
    /// with an error as soon as `gave_up()` says the other side will not come (its HTTP call failed).
    fn join(
        &mut self,
        unique_id: &[u8; UNIQUE_ID_BYTES],
        world_size: usize,
        device: Device,
        gave_up: &dyn Fn() -> bool,
    ) -> Result<Group, String>;

    /// Broadcasts `tensors`, in order, to every group of `groups`; returns when they have been
    /// sent, or with an error (the groups aborted) as soon as `gave_up()` says a server stopped
    /// receiving (its `/update_weights` failed), rather than wait for it forever.
    fn broadcast(&mut self, groups: &[Group], tensors: &[Tensor], gave_up: &dyn Fn() -> bool) -> Result<(), String>;

    /// Leaves `group` without waiting for its peers: a group whose transfer failed cannot carry
    /// the next one.
    fn abort(&mut self, group: Group);
}

/// The broadcaster of this build, or the one-line error that says how to get one.
pub fn default_broadcaster() -> Result<Box<dyn Broadcaster>, String> {
    #[cfg(feature = "nccl")]
    {
        Ok(Box::new(NcclBroadcaster::default()))
    }
    #[cfg(not(feature = "nccl"))]
    {
        Err(format!("rollout.sync_method {NOT_BUILT}"))
    }
}

/// What is wrong with `rollout.sync_method = "nccl"` in a build without the feature (after the key).
pub const NOT_BUILT: &str =
    "= \"nccl\" needs aha built with `--features nccl` (`cargo build --release -p aha --features nccl`)";

#[cfg(feature = "nccl")]
pub use real::NcclBroadcaster;

#[cfg(feature = "nccl")]
mod real {
    //! NCCL through cudarc's raw bindings, loaded at run time (no CUDA toolkit or libnccl at build
    //! time).
    //!
    //! Streams: every collective runs on the legacy default stream (`NULL`). libtorch runs its
    //! kernels on the same stream unless a program picks another (aha does not), and the legacy
    //! default stream waits for all work of the context anyway, so a broadcast starts after the
    //! optimizer step that wrote the weights; the trainer then waits for that stream to drain
    //! before it reuses the tensors, polling it (`cuStreamQuery`) rather than blocking, so that a
    //! server whose `/update_weights` failed makes it abort the groups (which ends their pending
    //! broadcasts) instead of waiting forever. The communicator is opened on a helper
    //! thread, because `ncclCommInitRank` blocks until every rank has joined and the server's
    //! ranks may never come (a refused HTTP call): the trainer then gives up waiting, aborts
    //! nothing (the communicator does not exist yet) and leaves that thread blocked in NCCL's
    //! rendezvous until the process ends, which a failed sync ends anyway.

    use std::sync::mpsc;
    use std::sync::Arc;
    use std::time::Duration;

    use cudarc::driver::CudaContext;
    use cudarc::nccl::sys;
    use tch::{Device, Kind, Tensor};

    use super::{Broadcaster, Group, UNIQUE_ID_BYTES};

    /// A communicator handle, moved from the thread that opened it to the one that sends.
    struct Comm(sys::ncclComm_t);
    // SAFETY: an NCCL communicator may be used from any thread, one call at a time; this type
    // only moves it between threads, and the broadcaster makes one call at a time.
    unsafe impl Send for Comm {}

    /// The trainer's side of vLLM's NCCL groups; loads libnccl and libcuda on first use.
    #[derive(Default)]
    pub struct NcclBroadcaster {
        comms: Vec<Option<Comm>>,
        context: Option<(usize, Arc<CudaContext>)>,
        loaded: bool,
    }

    /// The `ncclDataType_t` of `kind`.
    fn nccl_type(kind: Kind) -> Result<sys::ncclDataType_t, String> {
        use sys::ncclDataType_t as T;
        Ok(match kind {
            Kind::Float => T::ncclFloat32,
            Kind::Half => T::ncclFloat16,
            Kind::BFloat16 => T::ncclBfloat16,
            Kind::Double => T::ncclFloat64,
            Kind::Int8 => T::ncclInt8,
            Kind::Uint8 => T::ncclUint8,
            Kind::Int => T::ncclInt32,
            Kind::Int64 => T::ncclInt64,
            other => return Err(format!("NCCL cannot send {other:?} tensors")),
        })
    }

    fn check(what: &str, result: sys::ncclResult_t) -> Result<(), String> {
        if result == sys::ncclResult_t::ncclSuccess {
            Ok(())
        } else {
            Err(format!("{what}: NCCL error {result:?}"))
        }
    }

    /// Loads the libraries cudarc would otherwise panic on: libnccl (searched under the names
    /// cudarc tries) and the CUDA driver.
    pub(super) fn probe_libraries() -> Result<(), String> {
        let names = cudarc::get_lib_name_candidates("nccl");
        // SAFETY: loading libnccl runs no initialisation code of consequence; cudarc loads the
        // same library again (the loader shares it) when the first NCCL call is made.
        let found = names.iter().any(|name| unsafe { libloading::Library::new(name) }.is_ok());
        if !found {
            return Err(format!(
                "rollout.sync_method = \"nccl\": could not load libnccl (tried {}); put the folder of the vLLM \
                 environment's libnccl.so.2 on LD_LIBRARY_PATH, with a libnccl.so link to it",
                names.iter().take(2).cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        // SAFETY: only tries to load the driver library.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err("rollout.sync_method = \"nccl\": no CUDA driver (libcuda.so) on this machine".into());
        }
        Ok(())
    }

    impl NcclBroadcaster {
        fn load(&mut self) -> Result<(), String> {
            if !self.loaded {
                probe_libraries()?;
                self.loaded = true;
            }
            Ok(())
        }

        /// The primary context of CUDA device `ordinal` (the one libtorch's runtime uses),
        /// current on this thread.
        fn context(&mut self, ordinal: usize) -> Result<Arc<CudaContext>, String> {
            if let Some((o, context)) = &self.context {
                if *o == ordinal {
                    context.bind_to_thread().map_err(|e| format!("CUDA device {ordinal}: {e:?}"))?;
                    return Ok(Arc::clone(context));
                }
            }
            let context = CudaContext::new(ordinal).map_err(|e| format!("CUDA device {ordinal}: {e:?}"))?;
            context.bind_to_thread().map_err(|e| format!("CUDA device {ordinal}: {e:?}"))?;
            self.context = Some((ordinal, Arc::clone(&context)));
            Ok(context)
        }

        fn comm(&self, group: Group) -> Result<sys::ncclComm_t, String> {
            match self.comms.get(group.0) {
                Some(Some(comm)) => Ok(comm.0),
                _ => Err(format!("NCCL group {} is closed", group.0)),
            }
        }
    }

    fn ordinal(device: Device) -> Result<usize, String> {
        match device {
            Device::Cuda(i) => Ok(i),
            other => Err(format!(
                "rollout.sync_method = \"nccl\" sends the weights from a CUDA device, but they are on {other:?} \
                 (set model.device = \"cuda\", or use sync_method = \"disk\")"
            )),
        }
    }

    impl Broadcaster for NcclBroadcaster {
        fn unique_id(&mut self) -> Result<[u8; UNIQUE_ID_BYTES], String> {
            self.load()?;
            let mut id = std::mem::MaybeUninit::<sys::ncclUniqueId>::zeroed();
            // SAFETY: NCCL writes the 128 bytes of `id`.
            check("ncclGetUniqueId", unsafe { sys::ncclGetUniqueId(id.as_mut_ptr()) })?;
            // SAFETY: zeroed, then written by NCCL: initialised either way.
            let id = unsafe { id.assume_init() };
            Ok(id.internal.map(|b| b as u8))
        }

        fn join(
            &mut self,
            unique_id: &[u8; UNIQUE_ID_BYTES],
            world_size: usize,
            device: Device,
            gave_up: &dyn Fn() -> bool,
        ) -> Result<Group, String> {
            self.load()?;
            let ordinal = ordinal(device)?;
            let context = self.context(ordinal)?;
            let id = sys::ncclUniqueId { internal: unique_id.map(|b| b as _) };
            let world = i32::try_from(world_size).map_err(|_| format!("world size {world_size}"))?;
            // The workers all-reduce one float32 zero as their communicator opens.
            let warm = Tensor::zeros([1], (Kind::Float, device));
            let pointer = warm.data_ptr() as usize;
            let (sender, opened) = mpsc::channel();
            std::thread::Builder::new()
                .name("aha-nccl-join".into())
                .spawn(move || {
                    let result = (|| {
                        context.bind_to_thread().map_err(|e| format!("CUDA device {ordinal}: {e:?}"))?;
                        let mut comm = std::ptr::null_mut();
                        // SAFETY: `comm` receives the communicator; `id` is the group's unique id.
                        check("ncclCommInitRank", unsafe { sys::ncclCommInitRank(&mut comm, world, id, 0) })?;
                        let data = pointer as *mut std::ffi::c_void;
                        // SAFETY: `data` is one float32 of device memory, alive (`warm`) until the
                        // trainer has received this thread's answer.
                        let reduced = unsafe {
                            sys::ncclAllReduce(
                                data,
                                data,
                                1,
                                sys::ncclDataType_t::ncclFloat32,
                                sys::ncclRedOp_t::ncclSum,
                                comm,
                                std::ptr::null_mut(),
                            )
                        };
                        if let Err(e) = check("warm-up ncclAllReduce", reduced) {
                            // SAFETY: `comm` was opened above and is used by nothing else.
                            unsafe { sys::ncclCommAbort(comm) };
                            return Err(e);
                        }
                        tch::Cuda::synchronize(ordinal as i64);
                        Ok(Comm(comm))
                    })();
                    let _ = sender.send(result);
                })
                .map_err(|e| format!("starting the NCCL thread: {e}"))?;
            loop {
                match opened.recv_timeout(Duration::from_millis(100)) {
                    Ok(Ok(comm)) => {
                        drop(warm);
                        self.comms.push(Some(comm));
                        return Ok(Group(self.comms.len() - 1));
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(mpsc::RecvTimeoutError::Disconnected) => return Err("the NCCL thread stopped".into()),
                    Err(mpsc::RecvTimeoutError::Timeout) if gave_up() => {
                        // The thread may still touch `warm` if the group ever forms: keep it.
                        std::mem::forget(warm);
                        return Err("the server did not join the NCCL group".into());
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                }
            }
        }

        fn broadcast(
            &mut self,
            groups: &[Group],
            tensors: &[Tensor],
            gave_up: &dyn Fn() -> bool,
        ) -> Result<(), String> {
            let comms = groups.iter().map(|&g| self.comm(g)).collect::<Result<Vec<_>, _>>()?;
            let Some(first) = tensors.first() else { return Ok(()) };
            let ordinal = ordinal(first.device())?;
            self.context(ordinal)?;
            // Kept alive until the device is done with them (contiguous copies, if any).
            let mut sent = Vec::with_capacity(tensors.len());
            let abandon = |this: &mut Self| {
                for &group in groups {
                    this.abort(group);
                }
                Err("a server stopped receiving; the transfer was abandoned".to_string())
            };
            for tensor in tensors {
                if gave_up() {
                    return abandon(self);
                }
                if tensor.device() != first.device() {
                    return Err(format!("weights on both {:?} and {:?}", first.device(), tensor.device()));
                }
                let tensor = tensor.contiguous();
                let kind = nccl_type(tensor.kind())?;
                let data = tensor.data_ptr();
                for &comm in &comms {
                    // SAFETY: `data` holds numel elements of `kind` on this device, alive in
                    // `sent` until the synchronisation below; rank 0 only reads it.
                    let result =
                        unsafe { sys::ncclBroadcast(data, data, tensor.numel(), kind, 0, comm, std::ptr::null_mut()) };
                    check("ncclBroadcast", result)?;
                }
                sent.push(tensor);
            }
            loop {
                // SAFETY: queries the legacy default stream of the current context.
                match unsafe { cudarc::driver::sys::cuStreamQuery(std::ptr::null_mut()) } {
                    cudarc::driver::sys::CUresult::CUDA_SUCCESS => return Ok(()),
                    cudarc::driver::sys::CUresult::CUDA_ERROR_NOT_READY if gave_up() => return abandon(self),
                    cudarc::driver::sys::CUresult::CUDA_ERROR_NOT_READY => {
                        std::thread::sleep(std::time::Duration::from_millis(1))
                    }
                    error => return Err(format!("waiting for the broadcasts: CUDA error {error:?}")),
                }
            }
        }

        fn abort(&mut self, group: Group) {
            if let Some(Some(comm)) = self.comms.get_mut(group.0).map(Option::take) {
                // SAFETY: the communicator is open and this was its last use. Abort, not
                // destroy: destroy waits for the peers, which keep their side open.
                let result = unsafe { sys::ncclCommAbort(comm.0) };
                if let Err(e) = check("ncclCommAbort", result) {
                    tracing::warn!("{e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_the_standard_padded_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        // 0xfb 0xff: '+' and '/' (URL-safe base64 would write '-' and '_').
        assert_eq!(base64(&[0xfb, 0xff, 0xbf]), "+/+/");
        assert_eq!(base64(&[0u8; UNIQUE_ID_BYTES]).len(), 172);
    }

    #[test]
    fn bodies_are_what_vllm_reads() {
        let id = [7u8; UNIQUE_ID_BYTES];
        let init = init_body(&id, 2);
        assert_eq!(init["init_info"]["rank_offset"], 1);
        assert_eq!(init["init_info"]["world_size"], 3);
        assert_eq!(init["init_info"]["packed"], false);
        assert_eq!(init["init_info"]["nccl_unique_id_b64"], base64(&id));
        assert!(init["init_info"].get("master_address").is_none(), "one rendezvous mode only");
        let tensors = vec![
            ("model.embed_tokens.weight".to_string(), Tensor::zeros([5, 4], (Kind::BFloat16, Device::Cpu))),
            ("model.norm.weight".to_string(), Tensor::zeros([4], (Kind::Float, Device::Cpu))),
        ];
        let manifest = manifest(&tensors).unwrap();
        assert_eq!(
            update_body(&manifest),
            json!({"update_info": {"names": ["model.embed_tokens.weight", "model.norm.weight"],
                "dtype_names": ["bfloat16", "float32"], "shapes": [[5, 4], [4]], "packed": false}})
        );
        assert_eq!(finish_body(12), json!({"weight_version": "12"}));
        assert_eq!(workers_of(&json!({"world_size": 2})), Ok(2));
        assert!(workers_of(&json!({"world_size": 0})).is_err());
        assert!(workers_of(&json!({})).is_err());
    }

    #[test]
    fn tensors_nccl_cannot_carry_are_refused_by_name() {
        let tensors = vec![("mask".to_string(), Tensor::zeros([2], (Kind::Bool, Device::Cpu)))];
        assert_eq!(manifest(&tensors).unwrap_err(), "mask: NCCL cannot send Bool tensors");
    }

    #[cfg(not(feature = "nccl"))]
    #[test]
    fn without_the_feature_nccl_is_a_one_line_error() {
        let error = default_broadcaster().err().unwrap();
        assert!(error.contains("--features nccl") && !error.contains('\n'), "{error}");
    }

    /// On a machine without libnccl or a GPU (this one, CI's), the feature's broadcaster fails
    /// with one line, not cudarc's panic; on a GPU machine with libnccl it mints a unique id.
    #[cfg(feature = "nccl")]
    #[test]
    fn the_nccl_broadcaster_fails_cleanly_without_its_libraries() {
        let mut broadcaster = default_broadcaster().unwrap();
        match real::probe_libraries() {
            Err(_) => {
                let error = broadcaster.unique_id().unwrap_err();
                assert!(error.contains("libnccl") || error.contains("CUDA driver"), "{error}");
                assert!(!error.contains('\n'), "{error}");
                let join = broadcaster.join(&[0; UNIQUE_ID_BYTES], 2, Device::Cpu, &|| true);
                assert!(join.is_err());
            }
            Ok(()) => {
                let id = broadcaster.unique_id().unwrap();
                assert!(id.iter().any(|&b| b != 0));
            }
        }
    }
}
