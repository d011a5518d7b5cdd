//! Values a pass replaced, kept until its caller is idle: freeing the previous configuration
//! of a large firewall (a million small allocations) takes tens of milliseconds that a commit
//! should not wait for, and freeing it on another thread slows the pass down instead
//! (the allocator's locks are shared).

use std::any::Any;

#[derive(Default)]
pub struct Retired(Vec<Box<dyn Any + Send>>);

impl Retired {
    /// Keeps `value` until [`Retired::free`].
    pub fn keep<T: Send + 'static>(&mut self, value: T) {
        self.0.push(Box::new(value));
    }

    pub fn free(&mut self) {
        self.0.clear();
    }
}
