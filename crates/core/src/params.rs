//! Parameter-space utilities for any burn [`Module`].
//!
//! Parameters are paired *by position* in the module's visiting order (the order of
//! [`Module::visit`]), so two modules of one architecture can be combined even when they were
//! initialised separately and hold different `ParamId`s; mismatched shapes are a typed error.
//! Read-only statistics are [`ModuleVisitor`]s; transformations are [`ModuleMapper`]s that return
//! the new module by value.
//!
//! On an autodiff backend the results are tracked functions of their inputs (so they can sit inside
//! a meta-gradient); to start training a result as fresh leaves, go through
//! `AutodiffModule::valid` and [`require_grad`].

use crate::{Error, Result};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor};

/// Number of scalar parameters.
pub fn count<B: Backend, M: Module<B>>(module: &M) -> usize {
    module.num_params()
}

struct Collect<B: Backend> {
    tensors: Vec<(Vec<usize>, Tensor<B, 1>)>,
}

impl<B: Backend> ModuleVisitor<B> for Collect<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let shape = t.dims().to_vec();
        self.tensors.push((shape, t.reshape([-1])));
    }
}

struct Names {
    path: Vec<String>,
    out: Vec<String>,
}

impl<B: Backend> ModuleVisitor<B> for Names {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, _param: &Param<Tensor<B, D>>) {
        self.out.push(self.path.join("."));
    }
}

/// The dotted path of every float parameter, in visiting order: the struct fields and `Vec`
/// indices that lead to it (`convs.0.weight`, `norms.3.beta`, `head.bias` in the zoo's Conv4).
/// Learners select parameter groups by these names (a group is a path prefix: `head`,
/// `convs.0`); [`layer`] is the path without its last component.
pub fn names<B: Backend, M: Module<B>>(module: &M) -> Vec<String> {
    let mut v = Names {
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}

/// The layer a parameter path belongs to: the path without its last component
/// (`convs.0.weight` → `convs.0`; a top-level parameter is its own layer).
pub fn layer(name: &str) -> &str {
    name.rsplit_once('.').map_or(name, |(l, _)| l)
}

/// Whether parameter `name` lies in group `prefix` (the whole path or a prefix ending at a
/// `.`: `convs.1` holds `convs.1.weight` but not `convs.10.weight`).
pub fn in_group(name: &str, prefix: &str) -> bool {
    name == prefix || (name.starts_with(prefix) && name.as_bytes().get(prefix.len()) == Some(&b'.'))
}

/// Every float parameter, flattened, in visiting order, with its shape.
pub fn tensors<B: Backend, M: Module<B>>(module: &M) -> Vec<(Vec<usize>, Tensor<B, 1>)> {
    let mut c = Collect {
        tensors: Vec::new(),
    };
    module.visit(&mut c);
    c.tensors
}

/// All parameters concatenated into one vector (visiting order).
pub fn flatten<B: Backend, M: Module<B>>(module: &M) -> Option<Tensor<B, 1>> {
    let ts: Vec<_> = tensors(module).into_iter().map(|(_, t)| t).collect();
    if ts.is_empty() {
        None
    } else {
        Some(Tensor::cat(ts, 0))
    }
}

/// All parameters as host `f64`s (visiting order).
///
/// Reads each parameter's data as it is, recording no operation: on an autodiff backend an op
/// on a tracked parameter that never takes part in a backward pass (an unused head, a batch
/// norm without scale) stays in burn-autodiff's graph registry for as long as the parameter
/// lives, and every later `backward()` scans that registry — read once per meta-iteration
/// (the divergence check), such ops made training slow down without bound.
pub fn to_vec<B: Backend, M: Module<B>>(module: &M) -> Vec<f64> {
    struct Read(Vec<f64>);
    impl<B: Backend> ModuleVisitor<B> for Read {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            self.0.extend(p.val().into_data().iter::<f64>());
        }
    }
    let mut r = Read(Vec::new());
    module.visit(&mut r);
    r.0
}

/// A module of the same architecture whose parameters are `values` (visiting order), the inverse
/// of [`to_vec`]. A wrong length is [`Error::ShapeMismatch`].
pub fn from_vec<B: Backend, M: Module<B>>(module: M, values: &[f64]) -> Result<M> {
    let total = count(&module);
    if values.len() != total {
        return Err(Error::ShapeMismatch(format!(
            "{} values for a module with {total} parameters",
            values.len()
        )));
    }
    let mut offset = 0;
    map_indexed(module, |_, t| {
        let n = t.dims()[0];
        let device = t.device();
        let slice: Vec<f64> = values[offset..offset + n].to_vec();
        offset += n;
        Ok(Tensor::<B, 1>::from_data(
            burn::tensor::TensorData::new(slice, [n]),
            &device,
        ))
    })
}

/// Maps each float parameter with a closure that also sees its position.
struct IndexedMap<'a, B: Backend> {
    index: usize,
    f: &'a mut dyn FnMut(usize, Tensor<B, 1>) -> Result<Tensor<B, 1>>,
    error: Option<Error>,
}

impl<B: Backend> ModuleMapper<B> for IndexedMap<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let i = self.index;
        self.index += 1;
        if self.error.is_some() {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let shape = tensor.dims();
        match (self.f)(i, tensor.clone().reshape([-1])) {
            Ok(flat) => {
                let n = flat.dims()[0];
                if n != shape.iter().product::<usize>() {
                    self.error = Some(Error::ShapeMismatch(format!(
                        "parameter {i}: {n} values for shape {shape:?}"
                    )));
                    return Param::from_mapped_value(id, tensor, mapper);
                }
                Param::from_mapped_value(id, flat.reshape(shape), mapper)
            }
            Err(e) => {
                self.error = Some(e);
                Param::from_mapped_value(id, tensor, mapper)
            }
        }
    }
}

/// Replace every parameter with `f(position, flattened parameter)` (same length).
pub fn map_indexed<B: Backend, M: Module<B>>(
    module: M,
    mut f: impl FnMut(usize, Tensor<B, 1>) -> Result<Tensor<B, 1>>,
) -> Result<M> {
    let mut m = IndexedMap {
        index: 0,
        f: &mut f,
        error: None,
    };
    let out = module.map(&mut m);
    match m.error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn paired<B: Backend, M: Module<B>>(a: &M, b: &M) -> Result<Vec<(Tensor<B, 1>, Tensor<B, 1>)>> {
    let ta = tensors(a);
    let tb = tensors(b);
    if ta.len() != tb.len() {
        return Err(Error::ShapeMismatch(format!(
            "modules have {} and {} parameter tensors",
            ta.len(),
            tb.len()
        )));
    }
    ta.into_iter()
        .zip(tb)
        .enumerate()
        .map(|(i, ((sa, a), (sb, b)))| {
            if sa == sb {
                Ok((a, b))
            } else {
                Err(Error::ShapeMismatch(format!(
                    "parameter {i}: shapes {sa:?} and {sb:?}"
                )))
            }
        })
        .collect()
}

/// `y + alpha · x`, parameter-wise.
pub fn axpy<B: Backend, M: Module<B>>(alpha: f64, x: &M, y: M) -> Result<M> {
    let pairs = paired(x, &y)?;
    map_indexed(y, |i, t| Ok(t + pairs[i].0.clone().mul_scalar(alpha)))
}

/// `a + t · (b − a)`: `t = 0` gives `a`, `t = 1` gives `b`.
pub fn interpolate<B: Backend, M: Module<B>>(a: M, b: &M, t: f64) -> Result<M> {
    let pairs = paired(&a, b)?;
    map_indexed(a, |i, x| {
        Ok(x.clone() + (pairs[i].1.clone() - x).mul_scalar(t))
    })
}

/// `c · m`, parameter-wise.
pub fn scale<B: Backend, M: Module<B>>(module: &M, c: f64) -> M {
    // map_indexed only fails when the closure does; this one cannot.
    let out = map_indexed(module.clone(), |_, t| Ok(t.mul_scalar(c)));
    out.unwrap_or_else(|_| module.clone())
}

/// Weighted average `Σ wᵢ mᵢ / Σ wᵢ` of modules of one architecture.
///
/// Errors: an empty list, weights of the wrong length, negative or non-finite weights, weights that
/// do not sum to a positive number, or mismatched shapes.
pub fn weighted_average<B: Backend, M: Module<B>>(modules: &[M], weights: &[f64]) -> Result<M> {
    let first = modules.first().ok_or(Error::Empty("modules to average"))?;
    let total = crate::error::check_weights(weights, modules.len(), "modules")?;
    let all: Vec<Vec<(Vec<usize>, Tensor<B, 1>)>> = modules.iter().map(tensors).collect();
    for (k, ts) in all.iter().enumerate().skip(1) {
        if ts.len() != all[0].len() || ts.iter().zip(&all[0]).any(|(a, b)| a.0 != b.0) {
            return Err(Error::ShapeMismatch(format!(
                "module {k} does not have the architecture of module 0"
            )));
        }
    }
    map_indexed(first.clone(), |i, _| {
        let mut acc = all[0][i].1.clone().mul_scalar(weights[0] / total);
        for k in 1..all.len() {
            acc = acc + all[k][i].1.clone().mul_scalar(weights[k] / total);
        }
        Ok(acc)
    })
}

/// Uniform average of modules of one architecture.
pub fn average<B: Backend, M: Module<B>>(modules: &[M]) -> Result<M> {
    weighted_average(modules, &vec![1.0; modules.len()])
}

/// Euclidean norm of all parameters.
pub fn norm<B: Backend, M: Module<B>>(module: &M) -> f64 {
    tensors(module)
        .into_iter()
        .map(|(_, t)| crate::loss::scalar((t.clone() * t).sum()))
        .sum::<f64>()
        .sqrt()
}

/// `‖a − b‖₂` over all parameters.
pub fn diff_norm<B: Backend, M: Module<B>>(a: &M, b: &M) -> Result<f64> {
    Ok(paired(a, b)?
        .into_iter()
        .map(|(x, y)| {
            let d = x - y;
            crate::loss::scalar((d.clone() * d).sum())
        })
        .sum::<f64>()
        .sqrt())
}

/// Per-parameter-tensor `‖a − b‖ / ‖a‖` (visiting order): which layers moved.
pub fn relative_change<B: Backend, M: Module<B>>(a: &M, b: &M) -> Result<Vec<f64>> {
    Ok(paired(a, b)?
        .into_iter()
        .map(|(x, y)| {
            let d = x.clone() - y;
            let dn = crate::loss::scalar((d.clone() * d).sum()).sqrt();
            let n = crate::loss::scalar((x.clone() * x).sum()).sqrt();
            if n > 0.0 {
                dn / n
            } else {
                dn
            }
        })
        .collect())
}

/// Force lazily initialised parameters to take their values now.
///
/// burn initialises `Param`s lazily, and each *clone* of an uninitialised parameter initialises
/// separately (to different random values). Call this before cloning a freshly built burn module.
pub fn materialize<B: Backend, M: Module<B>>(module: M) -> M {
    struct Touch;
    impl<B: Backend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
    module
}

/// Mark every float parameter as a fresh leaf that requires gradients.
///
/// Needed after `AutodiffModule::from_inner`: burn 0.21's derived `from_inner` restores each
/// parameter's stored `require_grad` flag, which is `false` for parameters produced by a
/// computation (e.g. adapted fast weights), leaving them untracked.
pub fn require_grad<B: Backend, M: Module<B>>(module: M) -> M {
    struct Leaves;
    impl<B: Backend> ModuleMapper<B> for Leaves {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            // `require_grad` panics on a non-leaf tracked tensor: detach first (a no-op on
            // untracked tensors and on non-autodiff backends).
            Param::from_mapped_value(id, tensor.detach().require_grad(), mapper)
        }
    }
    module.map(&mut Leaves)
}

/// A gradient (by `ParamId`) as host `f64`s in the module's visiting order; parameters without a
/// gradient contribute zeros.
pub fn grads_to_vec<B, M>(module: &M, grads: &burn::optim::GradientsParams) -> Vec<f64>
where
    B: burn::tensor::backend::AutodiffBackend,
    M: burn::module::AutodiffModule<B>,
{
    struct V<'a, B: burn::tensor::backend::AutodiffBackend> {
        grads: &'a burn::optim::GradientsParams,
        out: Vec<f64>,
        _b: std::marker::PhantomData<B>,
    }
    impl<B: burn::tensor::backend::AutodiffBackend> ModuleVisitor<B> for V<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let n = param.val().shape().num_elements();
            match self.grads.get::<B::InnerBackend, D>(param.id) {
                Some(g) => self.out.extend(g.into_data().iter::<f64>()),
                None => self.out.extend(std::iter::repeat_n(0.0, n)),
            }
        }
    }
    let mut v = V::<B> {
        grads,
        out: Vec::new(),
        _b: std::marker::PhantomData,
    };
    module.visit(&mut v);
    v.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::NdArrayCpu as B;
    use burn::nn::{Linear, LinearConfig};

    fn lin(seed: u64) -> Linear<B> {
        let d = Default::default();
        <B as Backend>::seed(&d, seed);
        // burn initialises parameters lazily, separately in each clone: materialise first.
        materialize(LinearConfig::new(3, 2).init::<B>(&d))
    }

    #[test]
    fn flatten_and_count_agree() {
        let m = lin(1);
        assert_eq!(count(&m), 3 * 2 + 2);
        assert_eq!(flatten(&m).unwrap().dims(), [8]);
        assert_eq!(to_vec(&m).len(), 8);
    }

    #[test]
    fn average_of_two_known_sets() {
        let (a, b) = (lin(1), lin(2));
        let avg = average(&[a.clone(), b.clone()]).unwrap();
        let (va, vb, vm) = (to_vec(&a), to_vec(&b), to_vec(&avg));
        for i in 0..va.len() {
            assert!((vm[i] - 0.5 * (va[i] + vb[i])).abs() < 1e-6);
        }
        let w = weighted_average(&[a.clone(), b.clone()], &[3.0, 1.0]).unwrap();
        let vw = to_vec(&w);
        for i in 0..va.len() {
            assert!((vw[i] - (0.75 * va[i] + 0.25 * vb[i])).abs() < 1e-6);
        }
        let same = average(&[a.clone(), a.clone(), a.clone()]).unwrap();
        assert!(diff_norm(&same, &a).unwrap() < 1e-6);
    }

    #[test]
    fn interpolate_axpy_norms() {
        let (a, b) = (lin(3), lin(4));
        let mid = interpolate(a.clone(), &b, 0.5).unwrap();
        let avg = average(&[a.clone(), b.clone()]).unwrap();
        assert!(diff_norm(&mid, &avg).unwrap() < 1e-6);
        let z = axpy(-1.0, &a, a.clone()).unwrap();
        assert!(norm(&z) < 1e-6);
        let r = relative_change(&a, &a).unwrap();
        assert!(r.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let a = lin(1);
        let d = Default::default();
        let other = LinearConfig::new(4, 2).init::<B>(&d);
        assert!(matches!(
            average(&[a.clone(), other.clone()]),
            Err(Error::ShapeMismatch(_))
        ));
        assert!(matches!(
            diff_norm(&a, &other),
            Err(Error::ShapeMismatch(_))
        ));
        assert!(matches!(average::<B, Linear<B>>(&[]), Err(Error::Empty(_))));
        assert!(weighted_average(&[a.clone(), a.clone()], &[0.0, 0.0]).is_err());
        assert!(weighted_average(&[a.clone(), a.clone()], &[1.0, -1.0]).is_err());
    }
}
